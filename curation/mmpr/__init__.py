"""MMPR preference data: answers judged by a strict oracle, correctness and Dropout NTP pairs, their shards."""
