-- Who sent each message: 0 a typed client, 1 a plain client (as `plain` said before), 2 an
-- application through the HTTP API.
ALTER TABLE messages RENAME COLUMN plain TO source;
