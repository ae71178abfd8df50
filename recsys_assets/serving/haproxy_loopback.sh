#!/bin/sh
# Ray Serve's HAProxy, with the stats and metrics ports its config binds on every interface (`bind *:<port>`,
# `bind :<port>`) bound on 127.0.0.1: `recsys serve` on a loopback host points RAY_SERVE_HAPROXY_BINARY_PATH
# here and RECSYS_HAPROXY_BINARY at the real binary. Each start (and graceful reload) rewrites its -f file.
previous=""
for arg in "$@"; do
  if [ "$previous" = "-f" ]; then
    sed -i -E 's/^([[:space:]]*bind )\*?:/\1127.0.0.1:/' "$arg"
  fi
  previous="$arg"
done
exec "$RECSYS_HAPROXY_BINARY" "$@"
