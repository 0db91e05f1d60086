/** The SDK's version. */
export const VERSION = '0.1.0';

/** The dated F-KOD API version that every request pins with the FKOD-Version header. */
export const API_VERSION = '2026-12-01';
