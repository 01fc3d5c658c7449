#!/bin/sh
# Prints a Redis ACL file (redis-server --aclfile) for the liveness deployments: one user per
# role, each with only the commands it runs on only the keys it needs (Redis 7 selectors), all
# under the key prefix (LIVENESS_PREFIX, default liveness). docs/operations.md ("Trust") says
# what a holder of each password can do.
#   default  off and without a password: no client can log in as it. Its rights stay whole
#            because Redis replays the append-only file as this user: with -@all it refuses
#            every MULTI/EXEC on restart and drops what they wrote (redis/redis#14541);
#   admin    every command, for operators (INFO, ACL SETUSER to rotate passwords, ...);
#   ingest   adds to the input streams (faces, eyes) and reads the lag of the face workers;
#   worker   face and eye workers: reads the input streams in its group, adds scores;
#   fusion   reads scores and labels, alone writes decisions and the tracks' state; the operator
#            commands `liveness decisions` and `liveness label` run with it;
#   keda     KEDA's redis-streams scaler: the input streams' lengths and lags, read only; only
#            with REDIS_KEDA_PASSWORD set (Kubernetes: make-secrets.sh sets it).
# Every service user also writes heartbeats and reads the others' (`liveness status`).
# Passwords come from REDIS_<USER>_PASSWORD; they go into URLs, so only letters, digits and
# - _ . ~ are allowed, and at least 16 of them.
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

for user in ADMIN INGEST WORKER FUSION; do
    eval "check REDIS_${user}_PASSWORD \"\${REDIS_${user}_PASSWORD:-}\""
done
p=${LIVENESS_PREFIX:-liveness}
login="resetkeys resetchannels -@all +ping +auth +hello"
tx="+multi +exec +discard +unwatch"
beat="(~$p:heartbeat:* ~$p:services +watch +expire +hset +hgetall +zadd +zrem +zrange +zremrangebyscore)"
group="+xreadgroup +xack +xautoclaim +xclaim +xpending +xgroup|create +xinfo|groups"
echo "user default off resetpass ~* &* +@all"
echo "user admin on >$REDIS_ADMIN_PASSWORD ~* &* +@all"
echo "user ingest on >$REDIS_INGEST_PASSWORD $login $tx $beat" \
    "(~$p:faces ~$p:eyes +xadd +xtrim +xinfo|groups)" \
    "(~$p:camera-session:* +incr +incrby +expire)" \
    "(%R~$p:track:* +hmget)"
echo "user worker on >$REDIS_WORKER_PASSWORD $login $tx $beat" \
    "(~$p:faces ~$p:eyes $group)" \
    "(~$p:face-scores ~$p:eye-scores +xadd)" \
    "(~$p:dead:faces ~$p:dead:eyes +xadd +xtrim)"
echo "user fusion on >$REDIS_FUSION_PASSWORD $login $tx $beat" \
    "(~$p:face-scores ~$p:eye-scores ~$p:labels $group +xrange)" \
    "(~$p:labels ~$p:decisions +xadd)" \
    "(%R~$p:decisions +xrange +xrevrange +xread)" \
    "(~$p:dead:face-scores ~$p:dead:eye-scores ~$p:dead:labels +xadd +xtrim)" \
    "(~$p:track:* ~$p:seen:* ~$p:open-tracks ~$p:accuracy ~$p:calibration:* ~$p:calibrated +watch" \
    "+hgetall +hmget +hset +hincrby +expire +sadd +smembers +smismember +zadd +zrange +zrem +zremrangebyrank" \
    "+zremrangebyscore +zcard)"
if [ -n "${REDIS_KEDA_PASSWORD:-}" ]; then
    check REDIS_KEDA_PASSWORD "$REDIS_KEDA_PASSWORD"
    echo "user keda on >$REDIS_KEDA_PASSWORD $login (%R~$p:faces %R~$p:eyes +xinfo|groups +xlen +xpending)"
fi
