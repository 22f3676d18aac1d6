using System.Text;
using YamlDotNet.Core;
using YamlDotNet.Serialization;

namespace OdaKvmBackup.HelpBuilder.Markdown;

/// <summary>
/// One ```yaml block of a parameter section, in PlatyPS's schema 2.0.0 ("Type: String[]", "Position: 0", ...).
/// Values are kept as written; <see cref="Normalize"/> turns them into comparable form.
/// </summary>
public sealed class ParameterYaml
{
    public const string Type = "Type";
    public const string ParameterSets = "Parameter Sets";
    public const string Aliases = "Aliases";
    public const string AcceptedValues = "Accepted values";
    public const string Required = "Required";
    public const string Position = "Position";
    public const string DefaultValue = "Default value";
    public const string PipelineInput = "Accept pipeline input";
    public const string Wildcards = "Accept wildcard characters";
    public const string All = "(All)";

    /// <summary>The keys in PlatyPS's order; the blank line PlatyPS writes comes before <see cref="Required"/>.</summary>
    public static readonly IReadOnlyList<string> KeyOrder =
        [Type, ParameterSets, Aliases, AcceptedValues, Required, Position, DefaultValue, PipelineInput, Wildcards];

    /// <summary>The keys whose values come from the cmdlet; the default value is the page's own (the cmdlet cannot tell it).</summary>
    public static readonly IReadOnlyList<string> CmdletKeys =
        [Type, ParameterSets, Aliases, AcceptedValues, Required, Position, PipelineInput, Wildcards];

    private static readonly IDeserializer Reader = new DeserializerBuilder().Build();
    private static readonly ISerializer Writer = new SerializerBuilder().Build();

    public IReadOnlyDictionary<string, string?> Values { get; }

    public ParameterYaml(IReadOnlyDictionary<string, string?> values) => Values = values;

    public string? this[string key] => Values.TryGetValue(key, out var value) ? value : null;

    public bool Has(string key) => Values.ContainsKey(key);

    /// <summary>Parses the block with YamlDotNet; throws <see cref="YamlException"/> (with line and column) when it is not YAML.</summary>
    public static ParameterYaml Parse(string yaml)
    {
        var values = Reader.Deserialize<Dictionary<string, string?>>(yaml) ?? [];
        return new ParameterYaml(values);
    }

    /// <summary>The block's text, without fences; an empty value is written as "Key:", as PlatyPS does.</summary>
    public string ToYaml()
    {
        var text = new StringBuilder();
        foreach (string key in KeyOrder.Where(Values.ContainsKey).Concat(Values.Keys.Except(KeyOrder)))
        {
            if (key == Required && text.Length > 0) text.Append('\n');
            string? value = Values[key];
            text.Append(key).Append(':');
            if (!string.IsNullOrEmpty(value)) text.Append(' ').Append(Scalar(value));
            text.Append('\n');
        }
        return text.ToString();
    }

    /// <summary>A value as PlatyPS writes it (plain), quoted by YamlDotNet only when plain YAML would read it otherwise.</summary>
    private static string Scalar(string value)
    {
        string plain = $"key: {value}";
        try
        {
            if (Reader.Deserialize<Dictionary<string, string?>>(plain)?["key"] == value) return value;
        }
        catch (YamlException)
        {
            // Not plain YAML: quote it below.
        }
        return Writer.Serialize(value).TrimEnd('\n');
    }

    /// <summary>A value in comparable form: lists sorted, booleans and positions in one spelling.</summary>
    public static string Normalize(string key, string? value)
    {
        string text = (value ?? "").Trim();
        switch (key)
        {
            case ParameterSets or Aliases or AcceptedValues:
                var items = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                    .Where(i => !i.Equals("None", StringComparison.OrdinalIgnoreCase))
                    .Order(StringComparer.OrdinalIgnoreCase);
                return string.Join(", ", items);
            case Required or Wildcards:
                return bool.TryParse(text, out bool flag) ? flag.ToString() : text;
            case Position:
                return text.Equals("Named", StringComparison.OrdinalIgnoreCase) ? "Named" : text;
            case PipelineInput:
                return NormalizePipelineInput(text);
            default:
                return text;
        }
    }

    /// <summary>"True (ByValue, ByPropertyName)" and "True (ByPropertyName, ByValue)" are the same fact.</summary>
    private static string NormalizePipelineInput(string text)
    {
        int open = text.IndexOf('(', StringComparison.Ordinal);
        string flag = (open < 0 ? text : text[..open]).Trim();
        if (!bool.TryParse(flag, out bool accepts)) return text;
        if (!accepts || open < 0) return accepts.ToString();
        int close = text.IndexOf(')', open);
        string kinds = close < 0 ? text[(open + 1)..] : text[(open + 1)..close];
        var sorted = kinds.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.OrdinalIgnoreCase);
        return $"True ({string.Join(", ", sorted)})";
    }
}
