/** Routes: each page owns a URL, so reload, back and shared links land on the same view. */
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { BrowserRouter, Navigate, Route, Routes } from "react-router";
import { ApiError } from "./api/client";
import { RequireUser } from "./auth";
import { Layout } from "./components/Layout";
import { SignInPage } from "./pages/auth/SignInPage";
import { ClusterPage } from "./pages/cluster/ClusterPage";
import { ExperimentListPage } from "./pages/experiments/ExperimentListPage";
import { ExperimentPage } from "./pages/experiments/ExperimentPage";
import { ModelListPage } from "./pages/models/ModelListPage";
import { ModelPage } from "./pages/models/ModelPage";
import { TrialPage } from "./pages/trials/TrialPage";
import { ProjectPage } from "./pages/workspaces/ProjectPage";
import { WorkspaceListPage } from "./pages/workspaces/WorkspaceListPage";
import { WorkspacePage } from "./pages/workspaces/WorkspacePage";

export function makeQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        // 4xx answers are final; only network trouble and 5xx are worth a retry.
        retry: (count, error) => count < 2 && !(error instanceof ApiError && error.status < 500),
        refetchOnWindowFocus: true,
      },
    },
  });
}

const queryClient = makeQueryClient();

export function AppRoutes() {
  return (
    <Routes>
      <Route path="/sign-in" element={<SignInPage />} />
      <Route
        element={
          <RequireUser>
            <Layout />
          </RequireUser>
        }
      >
        <Route index element={<Navigate to="/experiments" replace />} />
        <Route path="experiments" element={<ExperimentListPage />} />
        <Route path="experiments/:experimentId/:tab?" element={<ExperimentPage />} />
        <Route path="trials/:trialId/:tab?" element={<TrialPage />} />
        <Route path="models" element={<ModelListPage />} />
        <Route path="models/:name/:version?" element={<ModelPage />} />
        <Route path="workspaces" element={<WorkspaceListPage />} />
        <Route path="workspaces/:workspaceId" element={<WorkspacePage />} />
        <Route path="projects/:projectId" element={<ProjectPage />} />
        <Route path="cluster" element={<ClusterPage />} />
        <Route path="*" element={<p className="state-empty">No such page.</p>} />
      </Route>
    </Routes>
  );
}

export function App() {
  return (
    <QueryClientProvider client={queryClient}>
      <BrowserRouter>
        <AppRoutes />
      </BrowserRouter>
    </QueryClientProvider>
  );
}
