"""The shipping service: ships paid orders with a carrier and tracks each parcel to the door."""
