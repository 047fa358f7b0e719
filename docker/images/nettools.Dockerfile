# Offline stand-in for alpine (`lab images --offline`): the `ip` command (Debian's iproute2),
# which the Docker runtime runs once per drill in a short-lived host-network container to add
# client addresses to the host's side of the edge network.
ARG BASE_IMAGE=local/debian-python:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
CMD ["ip", "-brief", "address"]
