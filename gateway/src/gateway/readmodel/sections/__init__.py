"""One module per producing context, each owning its sections of the 360 document with a
chassis `Consumer` of that context's stream. A new section (deals from `pipeline`, tickets
from `tickets`, ...) is a new module here, listed in `gateway.readmodel.CONSUMERS`."""
