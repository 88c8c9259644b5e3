# syntax=docker/dockerfile:1
#
# nftproxy: Node 22 on Debian 12 (bookworm, as the test machines), nft and conntrack, the
# compiled dist/ and production dependencies only; runs as uid 65532.
#
#   docker build -t ghcr.io/nftproxy/nftproxy:0.1.0 .
#
# Non-root, and still able to program nftables: nft and conntrack carry the file capability
# cap_net_admin+ep, so the unprivileged node process (which holds no capabilities itself)
# starts them with CAP_NET_ADMIN, provided the container has NET_ADMIN in its bounding set
# (DaemonSet: capabilities.add [NET_ADMIN]) and no_new_privs is off (allowPrivilegeEscalation
# must not be false: no_new_privs makes the kernel ignore file capabilities).
#
# Verified on Debian 12 (nftables 1.0.6, conntrack 1.4.7, kernel 6.18) on copies of the
# binaries, in a throwaway network namespace NS. Stage 1 switches to uid 65532 and execs a plain
# program (stage 2) that thus holds no capabilities, like node in the container; stage 2 execs
# the tool:
#   cp /usr/sbin/nft nft-caps; cp /usr/sbin/nft nft-plain; setcap cap_net_admin+ep nft-caps
#   (same for conntrack); U="ip netns exec NS setpriv --reuid 65532 --regid 65532
#   --clear-groups --inh-caps=-all setpriv"
#   $U ./nft-plain -f table.nft                   -> "cache initialization failed: Operation
#                                                     not permitted", exit 1
#   $U ./nft-caps -f table.nft                    -> exit 0 (`list table` shows it)
#   $U --no-new-privs ./nft-caps -f table.nft     -> "Operation not permitted", exit 1
#   $U ./conntrack-plain -L                       -> "you must be root or get CAP_NET_ADMIN",
#                                                     exit 1
#   $U ./conntrack-caps -L                        -> "0 flow entries have been shown", exit 0
#   $U --no-new-privs ./conntrack-caps -L         -> "you must be root ...", exit 1
#   without NET_ADMIN in the bounding set (setpriv --bounding-set -net_admin in stage 1),
#   exec of nft-caps itself fails: "Operation not permitted", exit 126.
# (A single `setpriv --reuid ... --no-new-privs ./nft-caps` succeeds, misleadingly: setpriv
# keeps its own capabilities across the uid switch, so the file capability gains nothing.)

ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No scripts: `prepare` builds dist/, which needs the sources copied below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="nftproxy" \
      org.opencontainers.image.description="A Kubernetes service proxy on nftables" \
      org.opencontainers.image.source="https://github.com/nftproxy/nftproxy" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# netbase (/etc/protocols) is needed: without it nft lists protocols as numbers (6 . 80
# instead of tcp . 80), nftproxy's reading of the kernel no longer matches what it wrote, and
# every sync rewrites everything. iproute2: `nftproxy explain` and `conntrack` on the live
# tables read the node's addresses with `ip -j addr` (through kubectl exec). libcap2-bin, for
# setcap, stays: iproute2 depends on it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nftables conntrack netbase iproute2 libcap2-bin \
    && setcap cap_net_admin+ep /usr/sbin/nft \
    && setcap cap_net_admin+ep /usr/sbin/conntrack \
    && getcap /usr/sbin/nft | grep -q cap_net_admin=ep \
    && getcap /usr/sbin/conntrack | grep -q cap_net_admin=ep \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot

WORKDIR /app
ENV NODE_ENV=production
# Production dependencies only (none has install scripts); no tsx, so bin/nftproxy.js runs
# dist/. The files stay root's: the process cannot change its own code.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY bin ./bin
COPY crds ./crds
# dist/telemetry/tracing.js reads ../../package.json: /app/package.json.
COPY --from=build /src/dist ./dist

USER 65532:65532
EXPOSE 10256
ENTRYPOINT ["node", "/app/bin/nftproxy.js"]
CMD ["run"]
