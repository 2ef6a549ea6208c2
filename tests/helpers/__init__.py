"""What the tests share: processes and servers, oracles, browsers, fault timing."""
