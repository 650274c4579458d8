#!/bin/sh
# The monthly job of docs/operations.md: link the month's extracts, then score everyone, as of the
# end of the last complete month (site.toml has reference_date = "auto"). Run it from cron on the
# 3rd of each month; nobody edits the config from one month to the next.
#
# Settings (the defaults are examples; set them in the crontab line or edit them here):
#   LINKCARE_SITE    the site folder: site.toml, the extracts, and the outputs cohort/ and risk/
#   LINKCARE_BIN     the folder holding the linkcare command (cron's PATH does not)
#   LINKCARE_MAILTO  who is mailed the end of the log when the job fails
#   LINKCARE_KEEP    how many monthly snapshots of each output to keep
set -u
SITE=${LINKCARE_SITE:-/srv/integrated-care}
PATH=${LINKCARE_BIN:-/opt/linkcare/venv/bin}:/usr/local/bin:/usr/bin:/bin
export PATH
KEEP=${LINKCARE_KEEP:-13}
cd "$SITE" || exit 1
mkdir -p logs
LOG=logs/linkcare-$(date +%Y-%m).log

run() {
  "$@" >>"$LOG" 2>&1
}

if run linkcare validate site.toml &&
   run linkcare link site.toml --out cohort --snapshot --keep "$KEEP" --previous latest &&
   run linkcare stratify site.toml --cohort cohort/latest --out risk --snapshot --keep "$KEEP" --previous latest
then
  exit 0
else
  status=$?
  # The log never holds a record's values, so its last lines can go by mail.
  tail -n 40 "$LOG" | mail -s "linkcare monthly job failed (exit $status)" "${LINKCARE_MAILTO:-analysts@example.nhs.uk}"
  exit "$status"
fi
