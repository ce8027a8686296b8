#!/bin/sh
# Writes the endpoints of the `users` upstream the way a discovery tool should: the
# whole list to a temporary file in the same directory, then renamed over the old one,
# so the gateway never reads half a file.
#
#   set-endpoints.sh 127.0.0.1:9001 127.0.0.1:9002
#   set-endpoints.sh 127.0.0.1:9001=3 127.0.0.1:9002   # address=weight
set -eu
file="${ENDPOINTS_FILE:-$(dirname "$0")/upstreams/users.json}"
[ "$#" -gt 0 ] || { echo "usage: $0 HOST:PORT[=WEIGHT]..." >&2; exit 2; }
tmp="$file.tmp.$$"
{
    printf '['
    sep=''
    for endpoint in "$@"; do
        case "$endpoint" in
            *=*) printf '%s{"address": "%s", "weight": %s}' "$sep" "${endpoint%%=*}" "${endpoint#*=}" ;;
            *) printf '%s"%s"' "$sep" "$endpoint" ;;
        esac
        sep=', '
    done
    printf ']\n'
} > "$tmp"
mv "$tmp" "$file"
echo "wrote $file: $(cat "$file")"
