/** One agent's slots as a row of small boxes; a busy one links to the trial holding it. */
import { Link } from "react-router";
import type { Schemas } from "../../api/client";

type Slot = Schemas["SlotOut"];

/** What a slot box says to screen readers and in its tooltip: "slot 0 (cuda): trial 12". */
export function slotLabel(slot: Slot): string {
  const where = `slot ${slot.index} (${slot.type})`;
  if (!slot.allocation_id) return `${where}: free`;
  return slot.trial_id != null ? `${where}: trial ${slot.trial_id}` : `${where}: busy`;
}

export function SlotBoxes({ agentId, slots }: { agentId: string; slots: Slot[] }) {
  if (!slots.length) return <span>no slots</span>;
  return (
    <ul className="slots" aria-label={`Slots of ${agentId}`}>
      {slots.map((slot) => {
        const label = slotLabel(slot);
        const title = slot.name ? `${label} — ${slot.name}` : label;
        return (
          <li key={slot.index}>
            {slot.allocation_id && slot.trial_id != null ? (
              <Link className="slot slot-busy" to={`/trials/${slot.trial_id}`} aria-label={label} title={title}>
                {slot.trial_id}
              </Link>
            ) : (
              <span
                className={`slot ${slot.allocation_id ? "slot-busy" : "slot-free"}`}
                role="img"
                aria-label={label}
                title={title}
              >
                {slot.allocation_id ? "•" : ""}
              </span>
            )}
          </li>
        );
      })}
    </ul>
  );
}
