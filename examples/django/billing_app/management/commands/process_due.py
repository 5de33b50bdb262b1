"""`python manage.py process_due`: renewals and expiries due now. Run it from cron or
Celery beat every few minutes; several workers at once are safe (each renewal and each
expiry happens once)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing_app.engine import billing


class Command(BaseCommand):
    help = "Charges saved cards for renewals and ends subscriptions that ran out."

    def handle(self, *args: Any, **options: Any) -> None:
        report = billing().process_due()
        self.stdout.write(
            f"renewals created {report.renewals_created}, sent {report.renewals_sent}, "
            f"expired {report.expired}, failures {report.failures}"
        )
