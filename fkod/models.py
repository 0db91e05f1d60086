"""Import every model module so ``Base.metadata`` contains all tables (Alembic, tests)."""

from fkod.core.auth import models as auth_models  # noqa: F401
from fkod.core.auth import oauth_models  # noqa: F401
from fkod.core.billing import models as billing_models  # noqa: F401
from fkod.core.db import Base
from fkod.core.metering import models as metering_models  # noqa: F401
from fkod.core import audit, idempotency_models, plugin_models, scheduler_models  # noqa: F401
from fkod.core.webhooks import models as webhook_models  # noqa: F401
from fkod.marketplace import models as marketplace_models  # noqa: F401
from fkod.partners import models as partner_models  # noqa: F401
from fkod.plugins.learning import models as learning_models  # noqa: F401

metadata = Base.metadata
