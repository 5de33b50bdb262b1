"""The operators' pages: ``/admin/overview`` (KPI cards with deltas, the Net/Gross revenue
chart, plan segments, the transactions table with its filters) and ``/admin/payments/{id}``
(one payment: its status history and ledger entries). Server-rendered HTML with an inline
SVG chart: no build step, no script. The numbers are the engine's (``Billing.overview``,
``revenue_series``, ``transactions``); this module only lays them out.

The pages answer only with the admin token of ``BILLING_ADMIN_TOKEN``: once as
``?token=...`` (which sets an HttpOnly cookie and redirects to the page without it), or as
``Authorization: Bearer ...``. Without a token configured, they answer 404. They show no
secret: no provider payload, no key, no token.
"""

from __future__ import annotations

import hmac
import html
from urllib.parse import urlencode
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

import billing_engine as be

COOKIE = "billing_admin"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2433;background:#f6f7fb}
h1{font-size:20px;margin:0 0 16px}h2{font-size:16px;margin:24px 0 8px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:180px;
box-shadow:0 1px 2px #0002}.card .label{color:#667}.card .value{font-size:22px;font-weight:600}
.delta.up{color:#197a3b}.delta.down{color:#b3261e}table{border-collapse:collapse;background:#fff;width:100%}
td,th{padding:6px 10px;border-bottom:1px solid #e3e6ee;text-align:left}form{margin:8px 0}
form label{margin-right:10px}svg{background:#fff;border-radius:8px}.legend span{margin-right:16px}
"""


def _money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01')):,}".replace(",", " ")


def _amount_of(amounts: Sequence[be.CurrencyAmount], currency: str) -> Decimal:
    return next((a.amount for a in amounts if a.currency == currency), Decimal(0))


def _delta(now: Decimal, before: Decimal, *, percent_points: bool = False, lower_is_better: bool = False) -> str:
    change = now - before
    if percent_points:
        text = f"{change * 100:+.1f} pp"
    elif before:
        text = f"{change / before * 100:+.1f}%"
    else:
        text = "new" if now else "±0"
    better = change < 0 if lower_is_better else change > 0
    css = "" if change == 0 else "up" if better else "down"
    return f'<span class="delta {css}">{html.escape(text)} vs the previous window</span>'


def _card(key: str, label: str, value: str, delta: str) -> str:
    return (f'<div class="card" id="kpi-{key}"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(value)}</div>{delta}</div>')


def _chart(points: Sequence[be.RevenuePoint], currency: str, days: Sequence[str]) -> str:
    """Gross (bars) and net (line) per day, as inline SVG."""
    by_day = {p.start: p for p in points if p.currency == currency}
    gross = [by_day[d].gross if d in by_day else Decimal(0) for d in days]
    net = [by_day[d].net if d in by_day else Decimal(0) for d in days]
    width, height, pad = 760, 220, 30
    top = max([*gross, *net, Decimal(1)])
    bottom = min([*net, Decimal(0)])
    span = top - bottom
    step = (width - 2 * pad) / max(len(days), 1)

    def y(value: Decimal) -> float:
        return float(height - pad - (value - bottom) / span * (height - 2 * pad))

    bars = "".join(
        f'<rect class="gross" x="{pad + i * step + 1:.1f}" y="{y(g):.1f}" width="{max(step - 2, 1):.1f}" '
        f'height="{max(y(Decimal(0)) - y(g), 0):.1f}" fill="#9db4e8"><title>{d} gross {g}</title></rect>'
        for i, (d, g) in enumerate(zip(days, gross))
    )
    line = " ".join(f"{pad + i * step + step / 2:.1f},{y(n):.1f}" for i, n in enumerate(net))
    return (f'<svg id="revenue-chart" width="{width}" height="{height}" role="img" aria-label="Net and gross revenue">'
            f'<line x1="{pad}" x2="{width - pad}" y1="{y(Decimal(0)):.1f}" y2="{y(Decimal(0)):.1f}" stroke="#99a"/>'
            f'{bars}<polyline fill="none" stroke="#1d4ed8" stroke-width="2" points="{line}"/></svg>'
            f'<div class="legend"><span>▮ gross</span><span>— net</span><span>{html.escape(currency)}, '
            f'{html.escape(days[0] if days else "")} to {html.escape(days[-1] if days else "")}</span></div>')


def _rows(items: Sequence[Sequence[str]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in item) + "</tr>" for item in items)


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
                        f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _decimal(text: Optional[str]) -> Optional[Decimal]:
    try:
        return Decimal(text) if text and text.strip() else None
    except ArithmeticError:
        raise be.InvalidArgument("amount: not a decimal number", {"field": "amount"}) from None


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def router(billing: be.Billing, admin_token: Optional[str], currency: str) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    def allowed(request: Request) -> bool:
        given = request.cookies.get(COOKIE) or request.headers.get("authorization", "").removeprefix("Bearer ")
        return bool(admin_token) and hmac.compare_digest(given.encode(), (admin_token or "").encode())

    def refused(request: Request) -> Optional[Response]:
        if not admin_token:
            return Response(status_code=404)
        token = request.query_params.get("token")
        if token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + ("?" + urlencode(kept) if kept else "")
            answer = RedirectResponse(target, status_code=303)
            answer.set_cookie(COOKIE, admin_token, httponly=True, samesite="strict", path="/admin")
            return answer
        return None if allowed(request) else HTMLResponse("admin token required", status_code=401)

    @pages.get("/admin/overview")
    def overview(
        request: Request,
        window_days: int = Query(30, ge=1, le=366),
        status: Optional[str] = Query(None, max_length=16),
        provider: Optional[str] = Query(None, max_length=16),
        network: Optional[str] = Query(None, max_length=64),
        plan: Optional[str] = Query(None, max_length=64),
        min_amount: Optional[str] = Query(None, max_length=32),
        max_amount: Optional[str] = Query(None, max_length=32),
    ) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        # An empty field of the form is no filter; an amount is a decimal string.
        low, high = _decimal(min_amount), _decimal(max_amount)
        now = billing.overview(window_days=window_days)
        before = billing.overview(now.window_start, window_days=window_days)
        mrr, mrr_before = _amount_of(now.mrr, currency), _amount_of(before.mrr, currency)
        arpu, arpu_before = _amount_of(now.arpu, currency), _amount_of(before.arpu, currency)
        cards = "".join([
            _card("mrr", f"MRR, {currency}", _money(mrr), _delta(mrr, mrr_before)),
            _card("arpu", f"ARPU, {currency}", _money(arpu), _delta(arpu, arpu_before)),
            _card("active", "Active subscriptions", str(now.active_subscriptions),
                  _delta(Decimal(now.active_subscriptions), Decimal(before.active_subscriptions))),
            _card("churn", "Subscriber churn", f"{now.subscriber_churn * 100:.1f}%",
                  _delta(now.subscriber_churn, before.subscriber_churn, percent_points=True, lower_is_better=True)),
        ])
        days = [(now.window_start + timedelta(days=i)).date().isoformat() for i in range(window_days)]
        segments = _rows([
            [html.escape(s.plan_code), html.escape(s.currency), html.escape(s.network or "—"), str(s.subscriptions),
             _money(s.mrr)]
            for s in now.segments
        ])
        wanted: Dict[str, Any] = {"status": status or None, "provider": provider or None,
                                  "network": network or None, "plan_code": plan or None,
                                  "min_amount": low, "max_amount": high}
        movements = billing.transactions(**wanted, limit=100)
        table = _rows([
            [f'<a href="/admin/payments/{html.escape(m.payment_id)}">{html.escape(m.payment_id[:12])}</a>',
             html.escape(m.user_id), html.escape(m.status), f"{_money(m.amount)} {html.escape(m.currency)}",
             html.escape(m.provider), html.escape(m.network or "—"), html.escape(m.plan_code or m.package_code or "—"),
             _iso(m.at)]
            for m in movements
        ])

        def choice(name: str, options: List[str], current: Optional[str]) -> str:
            items = "".join(f'<option value="{o}"{" selected" if o == (current or "") else ""}>{o or "any"}</option>'
                            for o in options)
            return f'<label>{name} <select name="{name}">{items}</select></label>'

        form = (f'<form id="filters" method="get" action="/admin/overview">'
                f'<input type="hidden" name="window_days" value="{window_days}">'
                f'{choice("status", ["", "gross", "refund", "reversal", "failed"], status)}'
                f'{choice("provider", ["", "yookassa", "crypto", "outside"], provider)}'
                f'<label>plan <input name="plan" value="{html.escape(plan or "")}" size="10"></label>'
                f'<label>network <input name="network" value="{html.escape(network or "")}" size="10"></label>'
                f'<label>amount from <input name="min_amount" value="{low or ""}" size="6"></label>'
                f'<label>to <input name="max_amount" value="{high or ""}" size="6"></label>'
                f'<button type="submit">Filter</button></form>')
        counts = ", ".join(f"{c.status} ({c.provider}): {c.count}" for c in now.payments) or "none"
        body = (f"<h1>Billing overview</h1><p>{window_days} days to {_iso(now.at)} UTC; the deltas compare the "
                f"{window_days} days before. {now.paying_users} paying users; new {now.new_subscriptions}, renewed "
                f"{now.renewals}, returned {now.reactivations}, churned {now.churned}.</p>"
                f'<div class="cards">{cards}</div><h2>Revenue, net and gross</h2>{_chart(now.revenue, currency, days)}'
                f"<h2>Plan segments</h2><table id=\"segments\"><tr><th>plan</th><th>currency or token</th>"
                f"<th>network</th><th>subscriptions</th><th>MRR</th></tr>{segments}</table>"
                f'<h2>Transactions</h2><p id="payment-counts">Payments in the window: {html.escape(counts)}</p>{form}'
                f'<table id="transactions"><tr><th>payment</th><th>user</th><th>status</th><th>amount</th>'
                f"<th>provider</th><th>network</th><th>plan or package</th><th>at</th></tr>{table}</table>")
        return _page("Billing overview", body)

    @pages.get("/admin/payments/{payment_id}")
    def payment(request: Request, payment_id: str) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        try:
            found = billing.payment(payment_id)
        except be.BillingError:
            return HTMLResponse("no such payment", status_code=404)
        fields = [("payment", found.id), ("user", found.user_id), ("purpose", found.purpose),
                  ("plan or package", found.plan_code or found.package_code or "—"),
                  ("amount", f"{found.amount} {found.currency}"), ("status", found.status),
                  ("refunded", str(found.refunded_amount)), ("created", _iso(found.created_at)),
                  ("paid", _iso(found.paid_at) if found.paid_at else "—")]
        if found.crypto:
            fields += [("network", str(found.crypto["network"])), ("transaction", str(found.crypto["tx_hash"])),
                       ("crypto state", str(found.crypto["state"]))]
        history = [e for e in billing.user_events(found.user_id, limit=1000)
                   if isinstance(e.payload, dict) and e.payload.get("payment_id") == found.id]
        entries = [e for e in billing.ledger(found.user_id, limit=1000) if e.reference == found.id]
        body = (f'<p><a href="/admin/overview">← overview</a></p><h1>Payment {html.escape(found.id)}</h1>'
                f'<table id="payment">{_rows([[html.escape(k), html.escape(str(v))] for k, v in fields])}</table>'
                f'<h2>Status history</h2><table id="history"><tr><th>at</th><th>event</th></tr>'
                f'{_rows([[_iso(e.occurred_at), html.escape(e.type)] for e in history])}</table>'
                f'<h2>Ledger entries</h2><table id="entries"><tr><th>id</th><th>kind</th><th>credits</th><th>at</th></tr>'
                f'{_rows([[str(e.id), html.escape(e.kind), str(e.credits_delta), _iso(e.created_at)] for e in entries])}'
                f"</table>")
        return _page(f"Payment {found.id}", body)

    return pages
