-- One database per service: their schemas are independent.
CREATE DATABASE registry OWNER loraplex;
CREATE DATABASE training OWNER loraplex;
CREATE DATABASE retrieval OWNER loraplex;
