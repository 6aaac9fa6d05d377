"""Personal data protection: per-customer data keys (crypto-shredding), sealing and masking.

Every personal field (name, address lines, phone, email, payment token) is sealed with its
customer's data key before it is stored or published; erasing the customer destroys the key,
so every copy (events, topics, DLQs, read models, snapshots, backups) reads as `REDACTED`.
"""

from fulfilment_kit.privacy.keys import KeyEncryptionKeys
from fulfilment_kit.privacy.masking import mask_personal
from fulfilment_kit.privacy.sealing import MASKED, REDACTED, Purpose, is_sealed
from fulfilment_kit.privacy.settings import PrivacySettings
from fulfilment_kit.privacy.store import InMemoryKeyStore, KeyStore, open_key_store
from fulfilment_kit.privacy.vault import (
    DataKeyMissing,
    NotAllowed,
    PersonalDataVault,
    in_process_vault,
    open_vault,
)

__all__ = [
    "MASKED",
    "REDACTED",
    "DataKeyMissing",
    "InMemoryKeyStore",
    "KeyEncryptionKeys",
    "KeyStore",
    "NotAllowed",
    "PersonalDataVault",
    "PrivacySettings",
    "Purpose",
    "in_process_vault",
    "is_sealed",
    "mask_personal",
    "open_key_store",
    "open_vault",
]
