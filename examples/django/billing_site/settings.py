"""A minimal Django project on billing_engine. The engine keeps its own SQLite file, so
the project needs no Django database for billing."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["billing_app"]
MIDDLEWARE = ["billing_app.middleware.ServerErrorMiddleware"]
# The views cap bodies at 64 KiB themselves (`billing_app/api.py`), with the error shape.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"billing": {"handlers": ["console"], "level": "INFO"}},
}
ROOT_URLCONF = "billing_site.urls"
DATABASES: dict = {}
USE_TZ = True

# Where the engine keeps its ledger (a SQLite file, or a PostgreSQL URL such as
# postgresql://billing@db-host/billing for several servers), and the tariffs it charges by.
BILLING_DB = os.environ.get("BILLING_DB", str(BASE_DIR / "billing.sqlite3"))
BILLING_TARIFFS = os.environ.get("BILLING_TARIFFS", str(BASE_DIR.parent / "web_tariffs.toml"))
