"""HTTP layer: one router per resource. Routes parse, authorise, call one service and shape the answer."""
