"""What chosen cohorts use and cost, month by month, as SPC charts against the site's plan."""
