from django.urls import path

from billing_app import views

urlpatterns = [
    path("billing/me/", views.me),
    path("billing/plans/", views.plans),
    path("billing/subscription/", views.subscription),
    path("billing/subscription/autorenew/", views.autorenew),
    path("billing/create-payment/", views.create_payment),
    path("billing/bind-card/start/", views.bind_card),
    path("billing/payment-method/", views.payment_method),
    path("billing/payments/", views.payments),
    path("billing/webhook/yookassa", views.yookassa_webhook),
    path("billing/crypto/checkout/", views.crypto_checkout),
    path("billing/webhook/crypto", views.crypto_webhook),
    path("billing/state", views.state),
    path("billing/ledger", views.ledger),
    path("billing/charge-generation", views.charge_generation),
    path("billing/charge-assistant", views.charge_assistant),
    path("billing/usage/check", views.usage_check),
    path("billing/usage/<str:metric>", views.usage),
    path("billing/chat/completions", views.chat),
    path("billing/entitlements", views.entitlements),
]

# Django's own answers in the service's error shape, not HTML pages.
handler400 = views.bad_request
handler404 = views.not_found
handler500 = views.server_error
