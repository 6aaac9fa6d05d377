# One image for every deployable; the command picks what runs:
#   fulfil-orders | fulfil-inventory | fulfil-payments | fulfil-shipping | fulfil-customer-service
#   fulfil-<service> relay                      the service's outbox relay alone
#   python -m fulfilment_kit.migrate <module>:create_app   create a service's tables, exit
#   fulfil ...                                  the ops CLI
# Runs as a non-root user with a read-only root filesystem (mount an emptyDir on /tmp):
# bytecode is compiled at build time and nothing is written at run time.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: resolve exactly uv.lock into /app/.venv (no dev dependencies) -----------------
FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first (a layer that changes only with the lock file), then our packages.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/orders/pyproject.toml services/orders/
COPY services/inventory/pyproject.toml services/inventory/
COPY services/payments/pyproject.toml services/payments/
COPY services/shipping/pyproject.toml services/shipping/
COPY services/customer-service/pyproject.toml services/customer-service/
RUN uv sync --locked --no-dev --no-install-workspace
COPY shared/src shared/src
COPY services services
RUN uv sync --locked --no-dev --no-editable

# --- runtime: the interpreter and the virtualenv, nothing else (no uv, no compilers) -----
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 fulfil \
    && useradd --system --uid 10001 --gid fulfil --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin fulfil
# The dev issuer's key directory, owned by the user so that a volume mounted there (compose's
# shared `auth-dev`) is writable; a deployment configures a JWKS and never writes it.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/fulfil/auth
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    FULFIL_HTTP_HOST=0.0.0.0 FULFIL_HTTP_PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK NONE
CMD ["fulfil-orders"]
