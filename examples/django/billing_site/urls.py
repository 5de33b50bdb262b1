from django.urls import path

from billing_app import views

urlpatterns = [
    path("billing/me/", views.me),
    path("billing/state", views.state),
    path("billing/charge-generation", views.charge_generation),
    path("billing/usage/check", views.usage_check),
    path("billing/usage/<str:metric>", views.usage),
    path("billing/chat/completions", views.chat),
]
