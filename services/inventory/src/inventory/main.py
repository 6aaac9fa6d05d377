"""Wiring of the inventory service process."""

from __future__ import annotations

from fastapi import FastAPI

from fulfilment_kit.skeleton import create_skeleton_app, run_service

SERVICE = "inventory"
DEFAULT_PORT = 8002


def create_app() -> FastAPI:
    return create_skeleton_app(SERVICE)


def run() -> None:
    run_service("inventory.main:create_app", DEFAULT_PORT)
