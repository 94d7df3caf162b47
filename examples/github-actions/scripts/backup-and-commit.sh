#!/usr/bin/env bash
# Back up the golden dataset and commit the backup only when its content changed.
#
# goldset leaves an unchanged backup untouched (not even its timestamp moves), so "nothing to
# commit" is the normal outcome of a scheduled run, not an error: the naive
# `git commit -am …` would fail the job every week nothing changed.
#
# Environment: DATABASE_URL (required), GOLDSET_BACKUP (default data/golden_dataset_backup.json),
# GOLDSET_PUSH=1 to push the commit, GIT_AUTHOR_NAME / GIT_AUTHOR_EMAIL (defaults below).
set -euo pipefail
backup=${GOLDSET_BACKUP:-data/golden_dataset_backup.json}
metadata=${backup%_backup.json}_metadata.json
[ "$metadata" != "$backup" ] || metadata=${backup%.json}_metadata.json

goldset backup --file "$backup"
goldset verify --file-only --file "$backup"

git add -- "$backup" "$metadata"
if git diff --cached --quiet -- "$backup" "$metadata"; then
    echo "golden dataset unchanged: nothing to commit"
    exit 0
fi
summary=$(git diff --cached --numstat -- "$backup" | awk '{print "+" $1 " -" $2 " lines"}')
git -c user.name="${GIT_AUTHOR_NAME:-goldset-bot}" -c user.email="${GIT_AUTHOR_EMAIL:-goldset-bot@users.noreply.github.com}" \
    commit --quiet -m "golden dataset backup ($(date -u +%Y-%m-%d)): $summary" -- "$backup" "$metadata"
git log -1 --format='committed %h: %s'
if [ "${GOLDSET_PUSH:-0}" = 1 ]; then
    git push --quiet
fi
