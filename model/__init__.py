"""The torch core: an InternVL-architecture model that trains on packed shards, generates and checks them."""
