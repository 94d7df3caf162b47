#!/usr/bin/env bash
# Does production still match the committed backup? Reported as information, never as a failure:
# a pull request that changes the dataset on purpose differs from production until it is merged
# and restored, and production moves on between weekly backups. The differences go to the job's
# step summary ($GITHUB_STEP_SUMMARY; stdout without it) and a notice annotation; a production
# database that cannot be reached is a warning. Exit 0 in every case but a missing goldset.
#
# Environment: DATABASE_URL (production, read-only is enough), GOLDSET_BACKUP (default
# data/golden_dataset_backup.json).
set -uo pipefail
backup=${GOLDSET_BACKUP:-data/golden_dataset_backup.json}
summary=${GITHUB_STEP_SUMMARY:-/dev/stdout}
command -v goldset >/dev/null || { echo "report-drift: goldset is not installed" >&2; exit 2; }

report=$(goldset backup --check --file "$backup" 2>&1)
status=$?
fenced() {
    echo '```'
    printf '%s\n' "$report" | head -n 200
    [ "$(printf '%s\n' "$report" | wc -l)" -le 200 ] || echo "… (cut at 200 lines)"
    echo '```'
}
case $status in
0)
    echo "### Production matches \`$backup\`" >>"$summary"
    echo "production matches $backup"
    ;;
1)
    {
        echo "### Production differs from \`$backup\` (information, not a failure)"
        echo
        echo "Expected when this pull request changes the dataset on purpose, or when production changed"
        echo "since the last weekly backup. \`goldset backup --check\` says:"
        echo
        fenced
    } >>"$summary"
    echo "::notice title=golden dataset drift::production differs from $backup; see the job summary"
    ;;
*)
    {
        echo "### Could not compare production with \`$backup\` (exit $status)"
        echo
        fenced
    } >>"$summary"
    echo "::warning title=golden dataset drift::could not compare production with $backup (goldset exit $status); see the job summary"
    ;;
esac
exit 0
