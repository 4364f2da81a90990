# raftd and raftctl in one image: `docker compose up` runs three members and a raftctl
# demo loop from it (see "Running on several machines: docker-compose" in README.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the project (not editable, no dev extra), then drop the sources: the console
# scripts `raftd` and `raftctl` are all the image needs.
WORKDIR /tmp/raftd-src
COPY pyproject.toml README.md ./
COPY raftd ./raftd
COPY wire ./wire
COPY cli ./cli
COPY observability ./observability
RUN pip install . && cd / && rm -rf /tmp/raftd-src

# A member never needs root. /data is created and owned here so that a fresh named volume
# mounted on it inherits that ownership.
RUN groupadd --system --gid 10001 raftd \
    && useradd --system --uid 10001 --gid raftd --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin raftd \
    && mkdir -p /data \
    && chown raftd:raftd /data
USER raftd
WORKDIR /data
VOLUME ["/data"]

# clients, peers, Prometheus metrics (member n1's ports; n2 and n3 use 7002/7102/9102, ...)
EXPOSE 7001 7101 9101

CMD ["raftd", "--help"]
