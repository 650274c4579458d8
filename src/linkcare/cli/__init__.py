"""The `linkcare` command line: thin click commands over the library.

Each command parses its options, calls one library function and prints a short summary. The
group frames every run (linkcare.cli.run): a start and an end line in the log, `<out>.run.json`
beside the output, and linkcare's own exceptions turned into `Error: ...` lines (or JSON under
`--json`) and exit codes (0 success, 1 the data or the run failed, 2 the command line or config is
wrong, 3 the output is locked by another run) without a traceback. The group's options may also
follow the command name (linkcare.cli.options).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from linkcare import __version__
from linkcare.cli.explain import explain
from linkcare.cli.monitor import monitor
from linkcare.cli.options import accept_group_options, as_of_option, parse_date, snapshot_options
from linkcare.cli.output import json_option, print_json, print_table
from linkcare.cli.profile import profile, show_rows
from linkcare.cli.run import begin_run, run_framed, start_run
from linkcare.cli.synth import synth
from linkcare.log import configure_logging, get_logger

log = get_logger("cli")


class LinkcareGroup(click.Group):
    """A click group that frames each command's run (start and end log lines, the run record, errors
    as `Error:` lines or JSON, linkcare.cli.run) and accepts its own options after the command name."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                              list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and command is not None:
            accept_group_options(self, command)
            begin_run(ctx, name, command, rest)
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        return run_framed(ctx, lambda: super(LinkcareGroup, self).invoke(ctx))


@click.group(cls=LinkcareGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="linkcare",
                      message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="Log more: -v shows debug lines and tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings, errors and each run's start and end lines.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Link pseudonymised health and social care extracts, and stratify risk.

    Exit codes: 0 success; 1 the data or the run failed; 2 the command line, config or a model is
    wrong; 3 another run is writing the same output. The options below may also follow the command
    name (linkcare link site.toml --out cohort -q).
    """
    configure_logging(-1 if quiet else verbose)
    start_run(ctx)
    if verbose and quiet:
        raise click.UsageError("use -v or -q, not both")


@click.command()
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--rows", "all_rows", is_flag=True,
              help="Also run the row checks of `link` over every row of every source, without linking, and "
                   "list what fails per file, column and check.")
@click.option("--strict", is_flag=True, help="With --rows: any failing row is a problem, as under `link --strict`.")
@json_option
def validate(config: Path, all_rows: bool, strict: bool, as_json: bool) -> None:
    """Check CONFIG and every extract it names; list every problem at once.

    Without --rows, reads only each extract's header (CSV) or schema (Parquet), so it is quick on
    any size of site. With --rows, every row goes through the row checks `link` runs, and a source
    whose rejected rows would stop `link` is a problem. Exits 2 if the config is wrong, 1 if only
    the extracts are, 0 if all is well.
    """
    from linkcare.commands.validate import validate_site

    if strict and not all_rows:
        raise click.UsageError("--strict applies to the row checks: give --rows too")
    report = validate_site(config)
    if all_rows:
        show_rows(report.config, strict, as_json)
        return
    base = report.config.path.parent
    if as_json:
        print_json("validate", {"config": str(config), "valid": True, "notes": list(report.notes), "sources": [
            {"name": s.name, "kind": s.kind, "columns": s.n_columns, "fields": list(s.fields),
             "path": str(s.path.relative_to(base) if s.path.is_relative_to(base) else s.path)}
            for s in report.sources]})
        return
    rows = [("source", "kind", "columns", "fields", "path")]
    for s in report.sources:
        shown = s.path.relative_to(base) if s.path.is_relative_to(base) else s.path
        rows.append((s.name, s.kind, str(s.n_columns), ", ".join(s.fields), str(shown)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))
    for note in report.notes:
        click.echo(f"Note: {note}")
    click.echo(f"OK: {config} and its {len(report.sources)} source(s) are valid")


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("output_path", metavar="OUTPUT", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False),
              help="File holding the secret key (at least 16 bytes).")
@click.option("--key-env", metavar="VAR", help="Environment variable holding the secret key.")
@click.option("--spec", "spec_path", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML file naming the columns: nhs, dob, postcode, birth_year, birth_month, "
                   "dob_format.")
@click.option("--nhs-column", help="Column of NHS numbers to check and replace with tokens.")
@click.option("--dob-column", help="Column of dates of birth to cut to year and month.")
@click.option("--postcode-column", help="Column of postcodes to cut to their district.")
@click.option("--dob-format", help='strftime format of the dates of birth, e.g. "%d/%m/%Y".')
@json_option
def pseudonymise(
    input_path: Path,
    output_path: Path,
    key_file: Path | None,
    key_env: str | None,
    spec_path: Path | None,
    nhs_column: str | None,
    dob_column: str | None,
    postcode_column: str | None,
    dob_format: str | None,
    as_json: bool,
) -> None:
    """Pseudonymise INPUT (CSV or Parquet) into OUTPUT, for a data controller.

    NHS numbers are checked (modulus 11); valid ones become keyed HMAC-SHA256 tokens and invalid
    ones are blanked. Dates of birth become birth year and month columns; postcodes become their
    district. OUTPUT is written whole or not at all, and must differ from INPUT. The key is read
    from --key-file or --key-env and never printed or logged. Options override the --spec file.
    """
    from linkcare.commands.pseudonymise import run_pseudonymise

    if key_file is not None and key_env is not None:
        raise click.UsageError("give --key-file or --key-env, not both")
    overrides = {"nhs": nhs_column, "dob": dob_column, "postcode": postcode_column, "dob_format": dob_format}
    spec, report = run_pseudonymise(input_path, output_path, spec_path, overrides, key_file, key_env)
    if as_json:
        print_json("pseudonymise", {"output": str(output_path), **dataclasses.asdict(report)})
        return
    rows: list[tuple[str, ...]] = [("rows", "count"), ("read", f"{report.rows:,}")]
    if spec.nhs is not None:
        rows += [("NHS numbers invalid (blanked)", f"{report.nhs_invalid:,}"),
                 ("NHS numbers missing", f"{report.nhs_missing:,}")]
    if spec.dob is not None:
        rows.append(("dates of birth not understood (blanked)", f"{report.dob_unparsed:,}"))
    if spec.postcode is not None:
        rows.append(("postcodes malformed (blanked)", f"{report.postcode_unparsed:,}"))
    print_table(rows)
    click.echo(f"wrote {output_path}")


@click.command()
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the cohort dataset; replaced whole only when the run succeeds.")
@click.option("--model", "model_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Reuse a model.json from an earlier run instead of training a new one.")
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Secret key for person IDs (default: linkcare's fixed key).")
@click.option("--previous", "previous", type=click.Path(path_type=Path, file_okay=False),
              help="Output folder of an earlier run: people keep its person IDs (see lineage.parquet). "
                   "May be the same folder as --out.")
@click.option("--strict", is_flag=True, help="Stop if any row fails the row checks, instead of setting "
                                               "it aside in rejects/.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="Where to run: this machine, or Apache Spark (master and settings from the config's "
                   "[engine] table or the Spark environment; needs pip install 'linkcare[spark]').")
@as_of_option
@snapshot_options
@json_option
def link(config: Path, out: Path, model_path: Path | None, key_file: Path | None, previous: Path | None,
         strict: bool, engine: str, as_of: str | None, snapshot: bool, keep: int | None, as_json: bool) -> None:
    """Link every source in CONFIG into people and write the cohort dataset to --out.

    Writes person_index.parquet, persons.parquet, events.parquet, pairs.parquet, model.json and
    manifest.json (with --previous, lineage.parquet; with rejected rows, rejects/<source>.parquet),
    all at once or not at all, and prints records, rejected rows and linked share per source,
    pairs per blocking pass, and time and peak memory per stage.
    """
    from linkcare.commands.link import LinkOptions, run_link
    from linkcare.sources.pseudonymise import read_key

    key = read_key(key_file=key_file) if key_file is not None else None
    summary = run_link(config, out, LinkOptions(model_path, key, previous, strict, engine,
                                                parse_date(as_of, "--as-of"), snapshot, keep))
    if as_json:
        print_json("link", summary)
        return
    rows: list[tuple[str, ...]] = [("source", "records", "rejected", "linked", "deterministic", "probabilistic")]
    for s in summary.sources:
        rows.append((str(s["source"]), f"{s['records']:,}", f"{s['rejected']:,}", f"{s['linked_share']:.1%}",
                     f"{s['deterministic']:,}", f"{s['probabilistic']:,}"))
    print_table(rows)
    click.echo()
    rows = [("candidate pass", "pairs", "new pairs")]
    rows += [(str(p["blocking"]), f"{p['pairs']:,}", f"{p['new_pairs']:,}") for p in summary.passes]
    print_table(rows)
    click.echo()
    rows = [("stage", "seconds", "peak MiB")]
    rows += [(str(st["stage"]), f"{st['seconds']:.1f}", f"{st['peak_mib']:.0f}") for st in summary.stages]
    print_table(rows)
    click.echo()
    click.echo(f"{summary.persons:,} people; {summary.pairs_accepted:,} of {summary.pairs_scored:,} scored pairs "
               f"accepted; model: {summary.model}; {summary.seconds:.1f} s, peak {summary.peak_mib:.0f} MiB")
    if summary.lineage is not None:
        changes = ", ".join(f"{summary.lineage.get(c, 0):,} {c}" for c in ("kept", "new", "merged", "split", "gone"))
        click.echo(f"person IDs carried over from --previous: {changes} (see lineage.parquet)")
    click.echo(f"Cohort dataset written to {summary.out}; report in {summary.out / 'link_report.html'}")


@click.command()
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--cohort", "cohort", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The output folder of `linkcare link`.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the models, metrics.json and model_card.md; replaced whole only on success.")
@click.option("--as-of", "as_of", metavar="DATE",
              help="Index date of the evaluation period (default: the config's reference_date minus the horizon).")
@click.option("--horizon", type=click.IntRange(min=1), help="Days after the index date in which an emergency "
              "admission is the outcome (default: risk.horizon_days, 365).")
@json_option
def train(config: Path, cohort: Path, out: Path, as_of: str | None, horizon: int | None, as_json: bool) -> None:
    """Fit the emergency-admission risk models on a cohort and evaluate them on a later period.

    The models are fitted on the people living at the index date minus the horizon and evaluated on
    the people living at the index date, each against the emergency admissions in the horizon that
    follows. Writes gradient_boosting.json and logistic.json (plain JSON, no pickle), metrics.json,
    model_card.md and manifest.json.
    """
    from linkcare.commands.train import train_models
    from linkcare.config import load_config

    result = train_models(load_config(config), cohort, out, parse_date(as_of, "--as-of"), horizon)
    if as_json:
        print_json("train", result)
        return
    m = result.metrics
    click.echo(f"fitted as of {result.fit_index}, evaluated as of {result.test_index} "
               f"(horizon {result.horizon_days} days, look-back {', '.join(map(str, result.windows))} days)")
    rows: list[tuple[str, ...]] = [("model", "AUROC", "95% CI", "AUPRC", "Brier", "cal. slope", "cal. intercept")]
    for kind, v in m["models"].items():
        mark = " (scores)" if kind == result.default_model else ""
        rows.append((kind + mark, f"{v['auroc']:.3f}", f"{v['auroc_ci'][0]:.3f}-{v['auroc_ci'][1]:.3f}",
                     f"{v['auprc']:.3f}", f"{v['brier']:.4f}", f"{v['calibration_slope']:.2f}",
                     f"{v['calibration_intercept']:.2f}"))
    print_table(rows)
    click.echo(f"scores with {result.default_model}: {m['default_model_rule']}")
    steps = m["ablation"]["steps"]
    click.echo("what each source adds (AUROC): " + ", ".join(
        f"{s['sources']} {s['auroc']:.3f}" + ("" if s["auroc_gain"] is None else f" ({s['auroc_gain']:+.3f})")
        for s in steps))
    click.echo(f"{result.seconds:.1f} s, peak {result.peak_mib:.0f} MiB")
    click.echo(f"Models, metrics.json, model_card.md and risk_report.html written to {result.out}")


@click.command()
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--cohort", "cohort", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The output folder of `linkcare link`.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path, file_okay=False),
              help="A folder written by `linkcare train`; without it, stratify trains on the cohort first.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for risk.parquet and worklists/; replaced whole only on success.")
@as_of_option
@click.option("--previous", "previous", type=click.Path(path_type=Path, file_okay=False),
              help="The output folder of an earlier `linkcare stratify`, or \"latest\" for the last run's: "
                   "worklists mark who is new to them since. Without it (or on a first run), everyone listed "
                   "is marked new.")
@click.option("--write-features", is_flag=True,
              help="Also write features.parquet: person_id and every feature the model used, as of the index "
                   "date, for audit and for checking models from outside.")
@snapshot_options
@json_option
def stratify(config: Path, cohort: Path, model_dir: Path | None, out: Path, as_of: str | None,
             previous: Path | None, write_features: bool, snapshot: bool, keep: int | None, as_json: bool) -> None:
    """Score every living registered person's risk of an emergency admission, tier and explain it.

    Writes risk.parquet (person_id, calibrated risk, percentile, tier, the top three factors with
    their contributions on the log-odds scale and in words) and worklists/<practice>.csv, one per
    GP practice, listing the people of the worklist tiers ([risk] worklist_tiers; default every
    tier but the lowest) by the spine's pseudonymised record keys from the highest risk down, with
    the index date, their top factors in words and whether they are new since --previous.
    """
    from linkcare.commands.snapshots import Snapshots
    from linkcare.commands.stratify import stratify as run_stratify
    from linkcare.config import load_config

    settings = load_config(config, parse_date(as_of, "--as-of"))
    summary = run_stratify(settings, cohort, Snapshots(out, snapshot, keep), model_dir, previous=previous,
                           write_features=write_features)
    if as_json:
        print_json("stratify", summary)
        return
    if summary.trained_here:
        click.echo(f"no --model given: trained on this cohort first (model in {summary.out / 'model'})")
    click.echo(f"scored {summary.people:,} people as of {summary.index_date} ({settings.as_of_facts['why']}) "
               f"with the {summary.model} model")
    rows: list[tuple[str, ...]] = [("tier", "people", "risk from", "risk to")]
    rows += [(t["tier"], f"{t['people']:,}", f"{t['risk_from']:.3f}", f"{t['risk_to']:.3f}") for t in summary.tiers]
    print_table(rows)
    since = (f"new since {summary.previous}" if summary.previous is not None
             else "no --previous, so everyone listed is marked new" if previous is None
             else f"--previous {previous} found no earlier output, so everyone listed is marked new")
    click.echo(f"worklists list {summary.listed:,} people ({', '.join(summary.worklist_tiers)}); "
               f"{summary.new_to_list:,} new to the list ({since})")
    click.echo(f"{summary.seconds:.1f} s, peak {summary.peak_mib:.0f} MiB")
    click.echo(f"Risk scores in {summary.out / 'risk.parquet'}; worklists for {summary.practices:,} practice(s) "
               f"in {summary.out / 'worklists'}; report in {summary.out / 'risk_report.html'}")


@click.group()
def evaluate() -> None:
    """Score linkage or risk output against labels."""


@evaluate.command("links")
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--truth", "truth", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Parquet with source, record_id and person (the true person of each record).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON for scripts.")
def evaluate_links_command(out_dir: Path, truth: Path, as_json: bool) -> None:
    """Print pairwise precision, recall and F1 of the linkage in DIR against --truth.

    A pair of records counts as linked when both have the same person_id, and as true when both
    have the same person in the truth file. Rows for a subset (records without an NHS token, one
    source) count the pairs that involve at least one record of the subset.
    """
    import json

    from linkcare.commands.evaluate import evaluate_linkage

    scores = evaluate_linkage(out_dir, truth)
    if as_json:
        click.echo(json.dumps({k: v.as_dict() for k, v in scores.items()}, indent=2))
        return
    rows: list[tuple[str, ...]] = [("records", "n", "precision", "recall", "F1")]
    rows += [(k, f"{v.records:,}", f"{v.precision:.4f}", f"{v.recall:.4f}", f"{v.f1:.4f}") for k, v in scores.items()]
    print_table(rows)


@evaluate.command("risk")
@click.argument("risk_dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--outcomes", "outcomes", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="CSV or Parquet with outcome (1/0) and person_id or record_id (the spine's record key).")
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
              help="Site config, for its [disclosure] rule (default: counts below 8 suppressed, rounded to 5).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON for scripts.")
def evaluate_risk_command(risk_dir: Path, outcomes: Path, config: Path | None, as_json: bool) -> None:
    """Score the risk in DIR (the output of `linkcare stratify`) against observed outcomes.

    Prints AUROC with a bootstrap 95% interval, AUPRC, Brier score, calibration slope and
    intercept, and sensitivity and PPV in the top 0.5%, 5% and 20%, overall and by age band, sex,
    ethnicity and deprivation quintile. Counts of people pass through the disclosure rule.
    """
    import json

    from linkcare.commands.evaluate import evaluate_scores

    result = evaluate_scores(risk_dir, outcomes, config)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    rows: list[tuple[str, ...]] = [("group", "value", "people", "AUROC", "AUPRC", "Brier", "cal. slope",
                                    "cal. intercept")]

    def row(group: str, value: str, m: dict[str, Any]) -> tuple[str, ...]:
        def num(x: Any, d: int = 3) -> str:
            return "-" if x is None else f"{x:.{d}f}"
        people = "<suppressed>" if m["people"] is None else f"{m['people']:,}"
        return (group, value, people, num(m.get("auroc")), num(m.get("auprc")), num(m.get("brier"), 4),
                num(m.get("calibration_slope"), 2), num(m.get("calibration_intercept"), 2))

    rows.append(row("all", "", result["overall"]))
    for label, groups in result["subgroups"].items():
        rows += [row(label, g["value"], g) for g in groups]
    print_table(rows)
    lo, hi = result["overall"]["auroc_ci"]
    click.echo(f"AUROC 95% interval {lo:.3f}-{hi:.3f}")
    for t in result["overall"]["top"]:
        click.echo(f"top {100 * t['share']:g}%: sensitivity {t['sensitivity']:.3f}, PPV {t['ppv']:.3f}")


# Commands register here; a command defined in another module is added the same way.
cli.add_command(synth)
cli.add_command(validate)
cli.add_command(pseudonymise)
cli.add_command(link)
cli.add_command(train)
cli.add_command(stratify)
cli.add_command(evaluate)
cli.add_command(explain)
cli.add_command(profile)
cli.add_command(monitor)


def main(argv: list[str] | None = None) -> None:
    """Run the `linkcare` command line; it exits with the command's exit code."""
    # standalone mode: click prints ClickExceptions (ours included) as `Error: ...` lines and
    # exits with their code; usage errors exit 2.
    cli.main(args=argv, prog_name="linkcare", standalone_mode=True)


__all__ = ["cli", "main"]
