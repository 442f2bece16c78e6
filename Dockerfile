# EvoForge service image: API, Celery workers and beat all run from it (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    EVOFORGE_HOME=/var/lib/evoforge

# bubblewrap: the fallback sandbox when the fork-server cannot create namespaces.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY evoforge ./evoforge
COPY api ./api
COPY cli ./cli
COPY worker ./worker
COPY evolution ./evolution
COPY evaluators ./evaluators
COPY sandbox ./sandbox
COPY db ./db
COPY migrations ./migrations
RUN pip install . && useradd --system --uid 10001 --home-dir /var/lib/evoforge --create-home evoforge

# The API, beat and LLM workers run as this unprivileged user. Evaluation workers start as root
# inside their container (see docker-compose.yml): the fork-server sandbox needs CAP_SYS_ADMIN
# to create namespaces and drops every candidate to its own unprivileged uid.
USER evoforge
EXPOSE 8000
ENTRYPOINT ["evoforge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
