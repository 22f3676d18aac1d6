using System.Diagnostics;

namespace OdaKvmBackup.HelpBuilder.Facts;

/// <summary>
/// Gets the cmdlets' metadata from PowerShell itself: a child pwsh imports the built module and runs
/// Export-CommandMetadata.ps1. A child, because a loaded binary module cannot be unloaded; PowerShell,
/// because it alone decides what binding sees (sets, positions, aliases, inherited and ShouldProcess parameters).
/// </summary>
public static class PowerShellFactsReader
{
    public const string ScriptName = "Export-CommandMetadata.ps1";
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(2);

    public static ModuleFacts Read(string manifestPath, string pwsh)
    {
        string manifest = Path.GetFullPath(manifestPath);
        if (!File.Exists(manifest))
            throw new FileNotFoundException($"The module manifest {manifest} does not exist: build the module first.", manifest);
        string script = Path.Combine(AppContext.BaseDirectory, ScriptName);
        string outFile = Path.Combine(Path.GetTempPath(), $"helpbuilder-{Guid.NewGuid():N}.json");
        // pwsh.dll (a pwsh installed as a .NET tool) runs under dotnet; anything else is the pwsh executable.
        bool isDll = pwsh.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        var start = new ProcessStartInfo(isDll ? "dotnet" : pwsh)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (isDll) start.ArgumentList.Add(pwsh);
        foreach (string arg in new[] { "-NoProfile", "-NonInteractive", "-File", script, "-ManifestPath", manifest, "-OutFile", outFile })
            start.ArgumentList.Add(arg);
        try
        {
            using var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {pwsh}.");
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(Timeout))
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"{pwsh} did not list the cmdlets of {manifest} within {Timeout.TotalSeconds:0} s.");
            }
            if (process.ExitCode != 0 || !File.Exists(outFile))
                throw new InvalidOperationException(
                    $"{pwsh} could not list the cmdlets of {manifest} (exit code {process.ExitCode}):\n{stderr.Result}{stdout.Result}");
            return ModuleFacts.Load(outFile);
        }
        finally
        {
            File.Delete(outFile);
        }
    }
}
