from django.apps import AppConfig


class BillingAppConfig(AppConfig):
    name = "billing_app"
