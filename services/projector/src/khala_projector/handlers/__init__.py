"""Thin edges of the projector: the AMQP consumer and the ProjectorAdmin gRPC servicer."""
