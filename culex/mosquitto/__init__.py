"""Mosquitto compatibility: its configuration file format and what each of its keys becomes.

`keys` is the catalogue of every key the reader knows (mapped, accepted with a warning, or
refused and why), `conf` reads a `mosquitto.conf` into the nested dict that `culex.toml` loads
into (`bridges` its `connection` sections into `[[bridges]]` tables), and `toml` writes that
dict back out as a commented `culex.toml` (`culex convert-config`). Nothing here imports
`culex.config`: the values are checked by the same validation as TOML's, which `culex.config`
passes in.
"""
