"""Dataset plugins: importing this package registers every loader in fastreid's DATASET_REGISTRY."""
import plugins  # noqa: F401  (fastreid shims must be applied before fastreid.data is imported)
from .market_style import (DG_CUHK03NP, DG_CUHK03NP_Labeled, DG_DukeMTMC, DG_Footage,  # noqa: E402
                           DG_Market1501)
from .msmt17 import DG_MSMT17  # noqa: E402
from .cuhk02 import DG_CUHK02  # noqa: E402
from .cuhksysu import DG_CUHKSYSU  # noqa: E402
from .randperson import DG_RandPerson  # noqa: E402
from .prid import DG_PRID  # noqa: E402
from .grid import DG_GRID  # noqa: E402
from .viper import DG_VIPeR, DG_VIPeR_BA  # noqa: E402
from .ilids import DG_iLIDS  # noqa: E402

# Every loader of this package, registered in fastreid's DATASET_REGISTRY under its class name
# ("DG_" + the dataset's usual name, so fastreid's own "Market1501", "PRID"... keep working).
DG_DATASETS = (DG_Market1501, DG_DukeMTMC, DG_MSMT17, DG_CUHK03NP, DG_CUHK03NP_Labeled, DG_CUHK02,
               DG_CUHKSYSU, DG_RandPerson, DG_PRID, DG_GRID, DG_VIPeR, DG_VIPeR_BA, DG_iLIDS, DG_Footage)
from .synthetic import dataset as _synthetic  # noqa: F401,E402  (SynthDomain0..7)
# VehicleID test sets with seeded gallery draws (fastreid's VehicleID layout and errors; no DG_ prefix:
# fastreid has no loader of these names)
from .vehicleid import VehicleID1600, VehicleID3200  # noqa: F401,E402
