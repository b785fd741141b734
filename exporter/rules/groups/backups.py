"""Alert rules: backups."""

from __future__ import annotations

from exporter.rules.model import Alert, Group, critical, warning

GROUP = Group(
    area="backups",
    name="runbook-exporter.backups",
    about="""
        Backup alerts (exporter/backups/): each configured backup (`backups:` in the exporter
        config) is checked on its own interval, and its age is compared with its own threshold
        series (runbook_backup_age_threshold_seconds{backup,severity}): an override of
        max_age_warning or max_age_critical in the config changes one backup's alert without a rule
        edit. Defaults: a daily backup (runbooks 000, 001, 002, 003) warns 26 h after the last one
        and pages after 50 h (two daily runs missed). The `for:` of each alert is justified in its
        runbook doc.
    """,
    rules=(
        Alert(
            "BackupTooOld",
            expr="""
                runbook_backup_age_seconds
                  > on(backup) group_left
                runbook_backup_age_threshold_seconds{severity="${severity}"}
            """,
            summary="Backup {{ $labels.backup }}: the newest is {{ $value | humanizeDuration }} old",
            description="""
                The newest good backup {{ $labels.backup }} found is {{ $value | humanizeDuration }}
                old, past its ${severity} age of
                {{ with printf `runbook_backup_age_threshold_seconds{backup=%q,severity="${severity}"}` $labels.backup | query }}{{ . | first | value | humanizeDuration }}{{ end }}${impact}
            """,
            variants=(
                warning(
                    "0m",
                    impact=' (it pages at {{ with printf `runbook_backup_age_threshold_seconds{backup=%q,severity="critical"}` $labels.backup | query }}{{ . | first | value | humanizeDuration }}{{ end }}): the last scheduled backup did not run or did not finish.',
                ),
                critical(
                    "0m",
                    impact=": several scheduled backups are missing and a restore now would lose that much data.",
                ),
            ),
        ),
        Alert(
            "BackupMissing",
            expr="runbook_backup_found == 0",
            summary="Backup {{ $labels.backup }}: no backup found at all",
            description="""
                The source of backup {{ $labels.backup }}
                ({{ with printf `runbook_backup_source_info{backup=%q}` $labels.backup | query }}{{ . | first | label "kind" }}{{ end }})
                was read and lists no good backup: no file of at least the minimum size, an empty
                listing, or a query with no row. There is nothing to restore from.
            """,
            variants=(critical("30m"),),
        ),
        Alert(
            "BackupSourceFailing",
            expr="runbook_backup_source_up == 0",
            summary="Backup {{ $labels.backup }}: its source cannot be read",
            description="""
                The exporter cannot read the source of backup {{ $labels.backup }}
                ({{ with printf `runbook_backup_source_info{backup=%q}` $labels.backup | query }}{{ . | first | label "kind" }}{{ end }}),
                reason:
                {{ with printf `runbook_backup_source_failure_reason{backup=%q} == 1` $labels.backup | query }}{{ . | first | label "reason" }}{{ end }}.
                Whether a backup was taken is unknown; the age of the last one found keeps growing
                and BackupTooOld still fires on it. The exporter's log says why.
            """,
            variants=(warning("15m"),),
        ),
    ),
)
