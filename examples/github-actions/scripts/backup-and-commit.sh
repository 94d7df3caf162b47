#!/usr/bin/env bash
# Back up the golden dataset and commit the backup only when its content changed.
#
# goldset leaves an unchanged backup untouched (not even its timestamp moves), so "nothing to
# commit" is the normal outcome of a scheduled run, not an error: the naive
# `git commit -am …` would fail the job every week nothing changed.
#
# Environment: DATABASE_URL (required), GOLDSET_BACKUP (default data/golden_dataset_backup.json),
# GOLDSET_PUSH=1 to push the commit, GOLDSET_PUSH_TRIES (default 3), GIT_AUTHOR_NAME /
# GIT_AUTHOR_EMAIL (defaults below).
#
# Pushing: when someone pushed in the meantime the push is rejected; the commit is then rebased
# onto the fetched branch and pushed again, at most GOLDSET_PUSH_TRIES times. Never a force push:
# a rebase that conflicts (the same backup file changed upstream) stops the job with a message,
# and the next run backs up again from the database.
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
[ "${GOLDSET_PUSH:-0}" = 1 ] || exit 0

tries=${GOLDSET_PUSH_TRIES:-3}
branch=$(git symbolic-ref --quiet --short HEAD) || {
    echo "backup-and-commit: not on a branch (detached HEAD): nothing to push to" >&2
    exit 1
}
remote=$(git config "branch.$branch.remote" || echo origin)
for try in $(seq 1 "$tries"); do
    if git push --quiet "$remote" "HEAD:refs/heads/$branch"; then
        echo "pushed to $remote/$branch (try $try of $tries)"
        exit 0
    fi
    [ "$try" -lt "$tries" ] || break
    echo "push rejected (try $try of $tries): rebasing onto $remote/$branch and trying again" >&2
    sleep "$try"
    git fetch --quiet "$remote" "$branch"
    if ! git -c user.name="${GIT_AUTHOR_NAME:-goldset-bot}" -c user.email="${GIT_AUTHOR_EMAIL:-goldset-bot@users.noreply.github.com}" \
        rebase --quiet FETCH_HEAD; then
        git rebase --abort || true
        echo "backup-and-commit: the backup changed upstream too (rebase conflict); not forcing it: rerun the job" >&2
        exit 1
    fi
done
echo "backup-and-commit: push rejected $tries times; giving up (the commit is not pushed)" >&2
exit 1
