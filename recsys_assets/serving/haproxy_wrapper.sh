#!/bin/sh
# Ray Serve's HAProxy, its generated config (the -f file, rewritten at each start and graceful reload) amended:
# * only GET and HEAD are replayed on another replica (`retry-on` covers every method: a POST that reached a
#   replica which then died would run twice, a second interaction with a new timestamp);
# * the default backend (no application deployed: the service starting, restarting or stopping) answers 503
#   with Retry-After instead of Ray's plain-text 404, which told clients the path does not exist (a client must
#   retry a 503, never a 404; our app is mounted at "/", so a deployed app takes every path);
# * with RECSYS_HAPROXY_LOOPBACK=1, the stats and metrics ports its config binds on every interface
#   (`bind *:<port>`, `bind :<port>`) are bound on 127.0.0.1.
# `recsys serve` points RAY_SERVE_HAPROXY_BINARY_PATH here and RECSYS_HAPROXY_BINARY at the real binary.
previous=""
for arg in "$@"; do
  if [ "$previous" = "-f" ]; then
    if ! grep -q "disable-l7-retry" "$arg"; then
      sed -i -E '/^frontend http_frontend/a\    http-request disable-l7-retry unless METH_GET' "$arg"
    fi
    sed -i -E 's/^([[:space:]]*)http-request return status 404 (.*)not found(.*)$/\1http-request return status 503 content-type text\/plain string "no application deployed yet: the service is starting or stopping; retry" hdr Retry-After 1/' "$arg"
    if [ "$RECSYS_HAPROXY_LOOPBACK" = "1" ]; then
      sed -i -E 's/^([[:space:]]*bind )\*?:/\1127.0.0.1:/' "$arg"
    fi
  fi
  previous="$arg"
done
# HAProxy dies with the process that started it (Ray's HAProxy manager), even one killed outright: it would
# otherwise outlive a stopped service, holding its port (util-linux's setpriv, where there is one).
if command -v setpriv >/dev/null 2>&1; then
  exec setpriv --pdeathsig KILL "$RECSYS_HAPROXY_BINARY" "$@"
fi
exec "$RECSYS_HAPROXY_BINARY" "$@"
