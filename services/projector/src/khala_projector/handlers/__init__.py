"""Thin edges of the projector: the AMQP consumer, the ProjectorAdmin gRPC
servicer and the operator commands (`rebuild`, `dlq`)."""
