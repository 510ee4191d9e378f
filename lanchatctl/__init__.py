"""lanchatctl: the lanchat administrator's tool."""
