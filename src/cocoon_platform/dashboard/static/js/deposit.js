/* How to add funds: the wallet, the memo, a ton:// link wallets open and its QR code (drawn by the
 * platform). */

import { api, report } from "./api.js";
import { $, setText, show } from "./dom.js";

// Only a TON transfer link may become a link target.
const TRANSFER_LINK = /^ton:\/\/transfer\/[A-Za-z0-9_\-:]+(\?[^\s]*)?$/;

export async function loadDeposit() {
  try {
    const deposit = await api("/v1/deposit", { auth: true });
    setText("deposit-wallet", deposit.wallet);
    setText("deposit-memo", deposit.memo);
    setText("deposit-instructions", deposit.instructions);
    const link = $("payment-link");
    const valid = typeof deposit.payment_link === "string" && TRANSFER_LINK.test(deposit.payment_link);
    if (valid) link.href = deposit.payment_link;
    link.hidden = !valid;
    $("deposit-qr").src = "/dashboard/deposit-qr.svg?code=" + encodeURIComponent(deposit.memo);
    show("deposit-qr-figure", true);
  } catch (error) {
    report("deposit-error")(error);
  }
}
