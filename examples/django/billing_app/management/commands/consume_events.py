"""`python manage.py consume_events --consumer quota-service`: the outbox's events after
the consumer's cursor, handed on in order and acknowledged once handled. Here a handler
prints each event as a JSON line; a real one applies it (a quota service reads
`plan.changed.v1`) and is idempotent by `event_id`, since delivery is at least once. Run
it from a worker in a loop, or from cron."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing_app.engine import billing


class Command(BaseCommand):
    help = "Hands on the outbox's events after the consumer's cursor, then acknowledges them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--consumer", default="events-worker")
        parser.add_argument("--limit", type=int, default=100)

    def handle(self, *args: Any, **options: Any) -> None:
        engine, consumer = billing(), options["consumer"]
        while events := engine.poll_events(consumer, limit=options["limit"]):
            for event in events:
                self.stdout.write(json.dumps(event.to_dict()))
                engine.ack_events(consumer, event.event_id)
