#!/bin/sh
# Prints a Redis ACL file (redis-server --aclfile) for the liveness deployments:
#   default   off and without a password: no client can log in as it. Its rights stay whole
#             because Redis replays the append-only file as this user: with -@all it refuses
#             every MULTI/EXEC on restart and drops what they wrote (redis/redis#14541);
#   admin     every command, for operators (INFO, ACL SETUSER to rotate passwords, ...);
#   liveness  the services (and KEDA): only the commands of liveness-commands.acl, only keys
#             under the key prefix (LIVENESS_PREFIX, default liveness).
# Passwords come from LIVENESS_REDIS_PASSWORD and REDIS_ADMIN_PASSWORD; they go into URLs, so
# only letters, digits and - _ . ~ are allowed, and at least 16 of them.
set -eu

check() {
    case "$2" in
        "") echo "users-acl.sh: set $1" >&2; exit 2 ;;
        *[!A-Za-z0-9._~-]*) echo "users-acl.sh: $1 may hold only letters, digits and - _ . ~" >&2; exit 2 ;;
    esac
    if [ "${#2}" -lt 16 ]; then
        echo "users-acl.sh: $1 is shorter than 16 characters" >&2
        exit 2
    fi
}

check LIVENESS_REDIS_PASSWORD "${LIVENESS_REDIS_PASSWORD:-}"
check REDIS_ADMIN_PASSWORD "${REDIS_ADMIN_PASSWORD:-}"
commands=$(grep -v '^[[:space:]]*#' "$(dirname "$0")/liveness-commands.acl" | tr -s ' \t\n' '   ' | sed 's/^ //; s/ $//')
echo "user default off resetpass ~* &* +@all"
echo "user admin on >$REDIS_ADMIN_PASSWORD ~* &* +@all"
echo "user liveness on >$LIVENESS_REDIS_PASSWORD ~${LIVENESS_PREFIX:-liveness}:* resetchannels -@all $commands"
