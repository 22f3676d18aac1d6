using System.Text.Json;

namespace OdaKvmBackup.HelpBuilder.Facts;

/// <summary>What PowerShell reports about the module's cmdlets (Get-Command metadata, as Export-CommandMetadata.ps1 writes it).</summary>
public sealed record ModuleFacts
{
    public required string ModuleName { get; init; }
    public required IReadOnlyList<CommandFacts> Commands { get; init; }

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNameCaseInsensitive = true };

    public static ModuleFacts FromJson(string json) =>
        JsonSerializer.Deserialize<ModuleFacts>(json, JsonOptions)
        ?? throw new InvalidDataException("The cmdlet metadata is empty.");

    public static ModuleFacts Load(string path) => FromJson(File.ReadAllText(path));
}

public sealed record CommandFacts
{
    public const string AllParameterSets = "__AllParameterSets";

    public required string Name { get; init; }
    public required string Verb { get; init; }
    public required string Noun { get; init; }
    /// <summary>The MAML file name PowerShell looks for, e.g. OdaKvmBackup.dll-Help.xml.</summary>
    public required string HelpFile { get; init; }
    public string? DefaultParameterSet { get; init; }
    public IReadOnlyList<string> OutputTypes { get; init; } = [];
    /// <summary>In declaration order, common parameters left out (WhatIf and Confirm stay).</summary>
    public IReadOnlyList<ParameterFacts> Parameters { get; init; } = [];
    public IReadOnlyList<ParameterSetFacts> ParameterSets { get; init; } = [];

    public ParameterFacts? FindParameter(string name) =>
        Parameters.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>The default set first, as Get-Help and PlatyPS show them.</summary>
    public IEnumerable<ParameterSetFacts> SetsInDisplayOrder() =>
        ParameterSets.OrderByDescending(s => s.IsDefault || s.Name == DefaultParameterSet);

    /// <summary>True when the cmdlet has no named parameter sets: PlatyPS writes "(All)" and no set headings.</summary>
    public bool HasSingleSet => ParameterSets.Count <= 1;
}

public sealed record ParameterFacts
{
    public required string Name { get; init; }
    /// <summary>The .NET type as Type.ToString() gives it, e.g. System.String[].</summary>
    public required string Type { get; init; }
    public bool IsSwitch { get; init; }
    public IReadOnlyList<string> Aliases { get; init; } = [];
    public IReadOnlyList<string> AcceptedValues { get; init; } = [];
    public bool SupportsWildcards { get; init; }

    /// <summary>The short name PlatyPS shows: String[], Int32, VmDisk.</summary>
    public string TypeName => TypeNames.Short(Type);

    public bool IsArray => Type.EndsWith("[]", StringComparison.Ordinal);
}

public sealed record ParameterSetFacts
{
    public required string Name { get; init; }
    public bool IsDefault { get; init; }
    public IReadOnlyList<SetParameterFacts> Parameters { get; init; } = [];
}

/// <summary>A parameter as one parameter set binds it.</summary>
public sealed record SetParameterFacts
{
    public required string Name { get; init; }
    /// <summary>Null for a named parameter.</summary>
    public int? Position { get; init; }
    public bool IsMandatory { get; init; }
    public bool ValueFromPipeline { get; init; }
    public bool ValueFromPipelineByPropertyName { get; init; }
}
