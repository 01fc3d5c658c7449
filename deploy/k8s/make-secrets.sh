#!/bin/sh
# Prints the Secrets the manifests need, as YAML, with new random passwords and decision key (or
# those set in REDIS_<USER>_PASSWORD, LIVENESS_DECISION_KEY):
#   deploy/k8s/make-secrets.sh | kubectl apply -f -          (or seal them: kubeseal, SOPS, ...)
#   redis-users               users.acl of deploy/redis/users-acl.sh, mounted by Redis only;
#   liveness-redis-ROLE       url, address, username, password, tls of one Redis user, for ingest,
#                             worker (face and eye workers), fusion and keda (KEDA, Redis's probe);
#   liveness-decisions        key: signs decisions, mounted by fusion only.
# REDIS_TLS=1: rediss:// URLs and TLS for KEDA (with the tls component, see deploy/README.md).
# NAMESPACE (default liveness), REDIS_HOST (default redis) and LIVENESS_PREFIX change the rest.
set -eu

here=$(dirname "$0")
namespace=${NAMESPACE:-liveness}
host=${REDIS_HOST:-redis}
new_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
REDIS_ADMIN_PASSWORD=${REDIS_ADMIN_PASSWORD:-$(new_password)}
REDIS_INGEST_PASSWORD=${REDIS_INGEST_PASSWORD:-$(new_password)}
REDIS_WORKER_PASSWORD=${REDIS_WORKER_PASSWORD:-$(new_password)}
REDIS_FUSION_PASSWORD=${REDIS_FUSION_PASSWORD:-$(new_password)}
REDIS_KEDA_PASSWORD=${REDIS_KEDA_PASSWORD:-$(new_password)}
LIVENESS_DECISION_KEY=${LIVENESS_DECISION_KEY:-$(new_password)}
export REDIS_ADMIN_PASSWORD REDIS_INGEST_PASSWORD REDIS_WORKER_PASSWORD REDIS_FUSION_PASSWORD REDIS_KEDA_PASSWORD
scheme=redis tls=disable
if [ "${REDIS_TLS:-0}" = 1 ]; then
    scheme=rediss tls=enable
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
umask 077
mkdir "$dir/users" "$dir/decisions"
sh "$here/../redis/users-acl.sh" > "$dir/users/users.acl"
printf '%s' "$LIVENESS_DECISION_KEY" > "$dir/decisions/key"

kubectl create secret generic redis-users --namespace "$namespace" --from-file="$dir/users" \
    --dry-run=client --output yaml
for user in ingest worker fusion keda; do
    password=$(eval "printf '%s' \"\$REDIS_$(echo "$user" | tr a-z A-Z)_PASSWORD\"")
    mkdir "$dir/$user"
    printf '%s' "$scheme://$user:$password@$host:6379/0" > "$dir/$user/url"
    printf '%s' "$host:6379" > "$dir/$user/address"
    printf '%s' "$user" > "$dir/$user/username"
    printf '%s' "$password" > "$dir/$user/password"
    printf '%s' "$tls" > "$dir/$user/tls"
    echo ---
    kubectl create secret generic "liveness-redis-$user" --namespace "$namespace" --from-file="$dir/$user" \
        --dry-run=client --output yaml
done
echo ---
kubectl create secret generic liveness-decisions --namespace "$namespace" --from-file="$dir/decisions" \
    --dry-run=client --output yaml
