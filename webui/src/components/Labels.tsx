/** Labels as text chips; they are user input, so never HTML. */
export function Labels({ labels }: { labels: readonly string[] }) {
  if (!labels.length) return null;
  return (
    <span className="labels">
      {labels.map((label) => (
        <span key={label} className="chip">
          {label}
        </span>
      ))}
    </span>
  );
}
