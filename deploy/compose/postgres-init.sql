-- One database per service (as the local stack creates them); run once by the postgres image.
CREATE DATABASE fulfil_orders;
CREATE DATABASE fulfil_inventory;
CREATE DATABASE fulfil_payments;
CREATE DATABASE fulfil_shipping;
CREATE DATABASE fulfil_customer_service;
CREATE DATABASE fulfil_keys;
