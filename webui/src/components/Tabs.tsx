/** Tabs as links (each tab has its own URL, so reload and back work), marked up as a tablist. */
import { NavLink } from "react-router";

export function Tabs({ base, tabs }: { base: string; tabs: { id: string; label: string }[] }) {
  return (
    <nav className="tabs" aria-label="Sections">
      {tabs.map((tab, index) => (
        <NavLink key={tab.id} to={index === 0 ? base : `${base}/${tab.id}`} end className="tab">
          {tab.label}
        </NavLink>
      ))}
    </nav>
  );
}
