"""Scale-out on Ray (needs the `ray` extra): `janus generate --prompts FILE --ray` runs a batch job over Ray
actors, one pipeline each (`batch`); `janus serve --ray --replicas N` serves the OpenAI-compatible app on Ray
Serve, one pipeline per replica (`serving`). Both start a local Ray on loopback, or join the cluster that
RAY_ADDRESS names (`cluster`). Nothing here is imported until a command asks for Ray."""
