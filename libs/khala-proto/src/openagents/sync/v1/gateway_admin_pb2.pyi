from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetFanoutMetricsRequest(_message.Message):
    __slots__ = ("topic_limit",)
    TOPIC_LIMIT_FIELD_NUMBER: _ClassVar[int]
    topic_limit: int
    def __init__(self, topic_limit: _Optional[int] = ...) -> None: ...

class TopicMetrics(_message.Message):
    __slots__ = ("topic", "subscribers", "frames_sent", "drops", "slow_consumer_evictions", "replays", "replay_seconds_total", "frames_per_second", "fanout_lag_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SENT_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    SLOW_CONSUMER_EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    REPLAYS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_SECONDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    FANOUT_LAG_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    subscribers: int
    frames_sent: int
    drops: int
    slow_consumer_evictions: int
    replays: int
    replay_seconds_total: float
    frames_per_second: float
    fanout_lag_ms: float
    def __init__(self, topic: _Optional[str] = ..., subscribers: _Optional[int] = ..., frames_sent: _Optional[int] = ..., drops: _Optional[int] = ..., slow_consumer_evictions: _Optional[int] = ..., replays: _Optional[int] = ..., replay_seconds_total: _Optional[float] = ..., frames_per_second: _Optional[float] = ..., fanout_lag_ms: _Optional[float] = ...) -> None: ...

class GetFanoutMetricsResponse(_message.Message):
    __slots__ = ("connections", "topics", "instance", "fanout_queue")
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    FANOUT_QUEUE_FIELD_NUMBER: _ClassVar[int]
    connections: int
    topics: _containers.RepeatedCompositeFieldContainer[TopicMetrics]
    instance: str
    fanout_queue: str
    def __init__(self, connections: _Optional[int] = ..., topics: _Optional[_Iterable[_Union[TopicMetrics, _Mapping]]] = ..., instance: _Optional[str] = ..., fanout_queue: _Optional[str] = ...) -> None: ...
