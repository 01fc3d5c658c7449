#!/bin/sh
# Prints the two Secrets the manifests need, as YAML, with new random passwords (or those set in
# LIVENESS_REDIS_PASSWORD / REDIS_ADMIN_PASSWORD):
#   deploy/k8s/make-secrets.sh | kubectl apply -f -          (or seal them: kubeseal, SOPS, ...)
#   redis-users     users.acl of deploy/redis/users-acl.sh, mounted by Redis only;
#   liveness-redis  url, address, username, password, tls: for the services and KEDA.
# REDIS_TLS=1: a rediss:// URL and TLS for KEDA (with the tls component, see deploy/README.md).
# NAMESPACE (default liveness), REDIS_HOST (default redis) and LIVENESS_PREFIX change the rest.
set -eu

here=$(dirname "$0")
namespace=${NAMESPACE:-liveness}
host=${REDIS_HOST:-redis}
new_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
LIVENESS_REDIS_PASSWORD=${LIVENESS_REDIS_PASSWORD:-$(new_password)}
REDIS_ADMIN_PASSWORD=${REDIS_ADMIN_PASSWORD:-$(new_password)}
export LIVENESS_REDIS_PASSWORD REDIS_ADMIN_PASSWORD
scheme=redis tls=disable
if [ "${REDIS_TLS:-0}" = 1 ]; then
    scheme=rediss tls=enable
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
umask 077
mkdir "$dir/users" "$dir/client"
sh "$here/../redis/users-acl.sh" > "$dir/users/users.acl"
printf '%s' "$scheme://liveness:$LIVENESS_REDIS_PASSWORD@$host:6379/0" > "$dir/client/url"
printf '%s' "$host:6379" > "$dir/client/address"
printf '%s' liveness > "$dir/client/username"
printf '%s' "$LIVENESS_REDIS_PASSWORD" > "$dir/client/password"
printf '%s' "$tls" > "$dir/client/tls"

kubectl create secret generic redis-users --namespace "$namespace" --from-file="$dir/users" \
    --dry-run=client --output yaml
echo ---
kubectl create secret generic liveness-redis --namespace "$namespace" --from-file="$dir/client" \
    --dry-run=client --output yaml
