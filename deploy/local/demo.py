"""Demo traffic for `make run`: realistic orders, declines, cancellations, carrier updates,
and after-sales: returns requested, authorised (by policy or an agent), received with an
inspection result, and refunded.

Talks only to the public HTTP APIs, each call with the token of the role that makes it
(customers their own, the warehouse, the carrier's signed webhooks), minted by the dev issuer
(dev only). FULFIL_DEMO=0 turns it off; FULFIL_DEMO_RATE sets orders per second (default 2).
Ctrl-C or SIGTERM ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field

import httpx

from fulfilment_kit import devauth
from fulfilment_kit.http import webhooks
from fulfilment_kit.http.auth import AGENT, CUSTOMER, WAREHOUSE
from shipping.gateway import SANDBOX_CARRIER, webhook_secret_name

ORDERS = os.environ.get("FULFIL_DEMO_ORDERS_URL", "http://127.0.0.1:8001")
INVENTORY = os.environ.get("FULFIL_DEMO_INVENTORY_URL", "http://127.0.0.1:8002")
SHIPPING = os.environ.get("FULFIL_DEMO_SHIPPING_URL", "http://127.0.0.1:8004")
CUSTOMER_SERVICE = os.environ.get("FULFIL_DEMO_CUSTOMER_SERVICE_URL", "http://127.0.0.1:8005")
RETURN_SHARE = 0.15  # of delivered orders, some units come back
# Reasons customers give, and how often: the shop's fault is authorised by policy; a change
# of mind of a large order waits for an agent.
RETURN_REASONS = [
    ("damaged", 30),
    ("wrong_item", 10),
    ("not_as_described", 10),
    ("changed_mind", 50),
]

# SKU, unit price (cents), stock received at start. Two are scarce, so some orders are rejected.
CATALOGUE = [
    ("MUG-BLUE", 1299, 400),
    ("MUG-RED", 1299, 400),
    ("TEE-S-BLACK", 2499, 300),
    ("TEE-M-BLACK", 2499, 300),
    ("TEE-L-WHITE", 2499, 300),
    ("HOODIE-M-GREY", 5999, 150),
    ("CAP-NAVY", 1999, 200),
    ("SOCKS-3PK", 999, 500),
    ("POSTER-A2", 1499, 250),
    ("NOTEBOOK-A5", 899, 400),
    ("LAMP-LIMITED", 8999, 3),
    ("SNEAKER-42-RARE", 11999, 2),
]
# Payment tokens of the sandbox gateway and how often customers use them.
TOKENS = [
    ("tok_visa", 84),
    ("tok_mastercard", 6),
    ("tok_decline", 5),
    ("tok_insufficient_funds", 3),
    ("tok_flaky", 2),
]
CITIES = [
    ("Berlin", "10115", "DE"),
    ("Paris", "75001", "FR"),
    ("Madrid", "28001", "ES"),
    ("Amsterdam", "1011", "NL"),
    ("Vienna", "1010", "AT"),
]


def bearer(role: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {devauth.mint([role], subject)}"}


WAREHOUSE_AUTH: dict[str, str] = {}
AGENT_AUTH: dict[str, str] = {}
CUSTOMER_AUTH: dict[str, dict[str, str]] = {}


def customer_auth(customer_id: str) -> dict[str, str]:
    if customer_id not in CUSTOMER_AUTH:
        CUSTOMER_AUTH[customer_id] = bearer(CUSTOMER, customer_id)
    return CUSTOMER_AUTH[customer_id]


def carrier_signed(hook: dict[str, object]) -> dict[str, object]:
    """The keyword arguments of a POST that sends `hook` as the sandbox carrier signs it."""
    content = json.dumps(hook).encode()
    secret = devauth.dev_secret(webhook_secret_name(SANDBOX_CARRIER))
    headers = webhooks.signed_headers(secret, SANDBOX_CARRIER, str(uuid.uuid4()), content)
    return {"content": content, "headers": {"content-type": "application/json", **headers}}


@dataclass
class Tally:
    placed: int = 0
    cancelled: int = 0
    delivered: int = 0
    exceptions: int = 0
    errors: int = 0
    returns_requested: int = 0
    returns_received: int = 0
    shipped: dict[str, str] = field(default_factory=dict)  # order id -> tracking number
    returnable: dict[str, int] = field(default_factory=dict)  # delivered order -> tries left
    returns: dict[str, str] = field(default_factory=dict)  # return id -> status


async def wait_until_ready(client: httpx.AsyncClient, timeout_s: float = 120) -> None:
    """The services start alongside the demo: poll their /readyz until all answer 200."""
    deadline = time.monotonic() + timeout_s
    for base in (ORDERS, INVENTORY, SHIPPING, CUSTOMER_SERVICE):
        while True:
            try:
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"demo traffic: {base} is not ready after {timeout_s:.0f} s")
            with contextlib.suppress(TimeoutError):  # poll interval within the deadline
                await asyncio.wait_for(asyncio.Event().wait(), timeout=0.5)


async def seed(client: httpx.AsyncClient) -> None:
    for sku, _, quantity in CATALOGUE:
        reply = await client.post(
            f"{INVENTORY}/stock/{sku}/receipts",
            json={"quantity": quantity},
            headers={"Idempotency-Key": f"demo-seed-{sku}", **WAREHOUSE_AUTH},
        )
        reply.raise_for_status()


def order_body(rng: random.Random, customers: list[str]) -> dict[str, object]:
    city, postal_code, country = rng.choice(CITIES)
    picks = rng.sample(CATALOGUE, k=rng.choice([1, 1, 2, 2, 3]))
    return {
        "customer_id": rng.choice(customers),
        "lines": [
            {"sku": s, "quantity": rng.choice([1, 1, 1, 2, 3]), "unit_price_minor": p}
            for s, p, _ in picks
        ],
        "currency": "EUR",
        "payment_token": rng.choices([t for t, _ in TOKENS], [w for _, w in TOKENS])[0],
        "shipping_address": {
            "recipient_name": "Demo Customer",
            "line1": "1 Demo Street",
            "city": city,
            "postal_code": postal_code,
            "country_code": country,
        },
    }


async def place_one(
    client: httpx.AsyncClient, rng: random.Random, tally: Tally, customers: list[str]
) -> None:
    body = order_body(rng, customers)
    auth = customer_auth(str(body["customer_id"]))
    reply = await client.post(
        f"{ORDERS}/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4()), **auth}
    )
    if reply.status_code != 201:
        tally.errors += 1
        return
    tally.placed += 1
    order_id = reply.json()["order_id"]
    if rng.random() < 0.05:  # a customer changes their mind shortly after
        with contextlib.suppress(TimeoutError):  # demo pacing, not synchronisation
            await asyncio.wait_for(asyncio.Event().wait(), timeout=rng.uniform(0.2, 1.5))
        cancel = await client.post(
            f"{ORDERS}/orders/{order_id}/cancel", json={"reason": "changed my mind"}, headers=auth
        )
        tally.cancelled += cancel.status_code in (200, 202)  # 202: paid, shipping answers
        return
    tally.shipped[order_id] = ""


async def carrier_updates(client: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    """Play the carrier: parcels that shipped get delivered (or, rarely, an exception)."""
    for order_id in list(tally.shipped)[:50]:
        reply = await client.get(f"{SHIPPING}/shipments/{order_id}", headers=WAREHOUSE_AUTH)
        if reply.status_code != 200:
            continue
        shipment = reply.json()
        if shipment["status"] in ("cancelled", "delivered", "exception"):
            tally.shipped.pop(order_id, None)
            continue
        if shipment["status"] != "shipped":
            continue
        if rng.random() < 0.05:
            hook = {
                "tracking_number": shipment["tracking_number"],
                "status": "exception",
                "reason_code": "recipient_absent",
                "reason": "nobody home, card left",
            }
            tally.exceptions += 1
        else:
            hook = {"tracking_number": shipment["tracking_number"], "status": "delivered"}
            tally.delivered += 1
            if rng.random() < RETURN_SHARE:
                tally.returnable[order_id] = 10  # customer-service learns of it over Kafka
        await client.post(f"{SHIPPING}/carrier/webhooks", **carrier_signed(hook))
        tally.shipped.pop(order_id, None)


async def after_sales(client: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    """Play customers, agents and the warehouse: request returns of delivered orders, decide
    the ones the policy leaves to an agent, and receive the parcels (payments refunds)."""
    for order_id, tries in list(tally.returnable.items())[:10]:
        order = (await client.get(f"{ORDERS}/orders/{order_id}", headers=AGENT_AUTH)).json()
        line = rng.choice(order["lines"])
        reason = rng.choices([r for r, _ in RETURN_REASONS], [w for _, w in RETURN_REASONS])[0]
        reply = await client.post(
            f"{CUSTOMER_SERVICE}/returns",
            json={
                "order_id": order_id,
                "lines": [{"sku": line["sku"], "quantity": line["quantity"]}],
                "reason_code": reason,
            },
            headers={
                "Idempotency-Key": f"demo-return-{order_id}",
                **customer_auth(order["customer_id"]),
            },
        )
        if reply.status_code == 201:
            tally.returns[reply.json()["return_id"]] = reply.json()["status"]
            tally.returns_requested += 1
            tally.returnable.pop(order_id, None)
        elif reply.status_code in (404, 409) and tries > 1:  # delivery not seen there yet
            tally.returnable[order_id] = tries - 1
        else:
            tally.returnable.pop(order_id, None)
            tally.errors += 1
    for return_id, status in list(tally.returns.items())[:10]:
        if status == "requested":  # an agent decides
            if rng.random() < 0.8:
                reply = await client.post(
                    f"{CUSTOMER_SERVICE}/returns/{return_id}/authorise",
                    json={"agent": "demo-agent"},
                    headers=AGENT_AUTH,
                )
            else:
                reply = await client.post(
                    f"{CUSTOMER_SERVICE}/returns/{return_id}/reject",
                    json={"reason": "outside the policy for opened items", "agent": "demo-agent"},
                    headers=AGENT_AUTH,
                )
        elif status == "authorised":  # the parcel arrives; the warehouse inspects it
            ret = (
                await client.get(f"{CUSTOMER_SERVICE}/returns/{return_id}", headers=WAREHOUSE_AUTH)
            ).json()
            inspected = [
                {
                    "sku": item["sku"],
                    "quantity": item["quantity"],
                    "result": "restockable" if rng.random() < 0.8 else "damaged",
                }
                for item in ret["lines"]
            ]
            reply = await client.post(
                f"{CUSTOMER_SERVICE}/returns/{return_id}/receipt",
                json={"lines": inspected},
                headers=WAREHOUSE_AUTH,
            )
            tally.returns_received += reply.status_code == 200
        else:
            tally.returns.pop(return_id, None)
            continue
        if reply.status_code == 200:
            tally.returns[return_id] = reply.json()["status"]
        else:
            tally.returns.pop(return_id, None)
            tally.errors += 1


async def restock(client: httpx.AsyncClient) -> None:
    reply = await client.get(
        f"{INVENTORY}/stock", params={"below_threshold": "true"}, headers=WAREHOUSE_AUTH
    )
    if reply.status_code != 200:
        return
    for item in reply.json():
        if item["sku"] in ("LAMP-LIMITED", "SNEAKER-42-RARE"):
            continue  # scarce on purpose
        await client.post(
            f"{INVENTORY}/stock/{item['sku']}/receipts",
            json={"quantity": 100},
            headers=WAREHOUSE_AUTH,
        )


async def main() -> None:
    if os.environ.get("FULFIL_DEMO", "1") == "0":
        print("demo traffic is off (FULFIL_DEMO=0)")
        return
    rate = float(os.environ.get("FULFIL_DEMO_RATE", "2"))
    WAREHOUSE_AUTH.update(bearer(WAREHOUSE, "demo-warehouse"))
    AGENT_AUTH.update(bearer(AGENT, "demo-agent"))
    rng = random.Random()
    customers = [str(uuid.uuid4()) for _ in range(40)]  # repeat customers, for repurchase KPIs
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until_ready(client)
        await seed(client)
        print(f"demo traffic: seeded {len(CATALOGUE)} SKUs, placing ~{rate:g} orders/s")
        tasks: set[asyncio.Task[None]] = set()
        last_report = last_chores = time.monotonic()
        while not stop.is_set():
            task = asyncio.create_task(place_one(client, rng, tally, customers))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if time.monotonic() - last_chores > 2:
                await carrier_updates(client, rng, tally)
                await after_sales(client, rng, tally)
                await restock(client)
                last_chores = time.monotonic()
            if time.monotonic() - last_report > 10:
                print(
                    f"demo traffic: placed {tally.placed}, cancelled {tally.cancelled}, "
                    f"delivered {tally.delivered}, delivery exceptions {tally.exceptions}, "
                    f"returns requested {tally.returns_requested}, "
                    f"received and refunded {tally.returns_received}, errors {tally.errors}",
                    flush=True,
                )
                last_report = time.monotonic()
            with contextlib.suppress(TimeoutError):  # paces arrivals like real customers
                await asyncio.wait_for(stop.wait(), timeout=rng.expovariate(rate))


if __name__ == "__main__":
    asyncio.run(main())
