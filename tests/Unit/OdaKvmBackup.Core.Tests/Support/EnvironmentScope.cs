namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// Sets environment variables for the length of a using block and puts the old values back: the limits a user sets
/// with $env:ODAKVMBACKUP_... are read from the environment. The variables are process-wide: only classes in
/// <see cref="EnvironmentCollection"/> use this, and that collection never runs beside another.
/// </summary>
internal sealed class EnvironmentScope : IDisposable
{
    private readonly List<(string Name, string? Value)> _previous = new();

    public EnvironmentScope(params (string Name, string? Value)[] variables)
    {
        foreach (var (name, value) in variables)
        {
            _previous.Add((name, Environment.GetEnvironmentVariable(name)));
            Environment.SetEnvironmentVariable(name, value);
        }
    }

    public void Dispose()
    {
        foreach (var (name, value) in _previous)
            Environment.SetEnvironmentVariable(name, value);
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class EnvironmentCollection
{
    public const string Name = "Limits set in the environment";
}
