"""Wiring of the customer-service service process."""

from __future__ import annotations

from fastapi import FastAPI

from fulfilment_kit.skeleton import create_skeleton_app, run_service

SERVICE = "customer-service"
DEFAULT_PORT = 8005


def create_app() -> FastAPI:
    return create_skeleton_app(SERVICE)


def run() -> None:
    run_service("customer_service.main:create_app", DEFAULT_PORT)
