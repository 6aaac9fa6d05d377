"""Returns (RMA): the order replica, return requests, their policy, application and routes."""
