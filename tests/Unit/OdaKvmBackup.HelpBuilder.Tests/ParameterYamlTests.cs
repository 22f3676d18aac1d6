using OdaKvmBackup.HelpBuilder.Markdown;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class ParameterYamlTests
{
    private const string PlatyPsBlock = """
        Type: String[]
        Parameter Sets: (All)
        Aliases: Name, Domain

        Required: True
        Position: 0
        Default value: None
        Accept pipeline input: True (ByPropertyName, ByValue)
        Accept wildcard characters: False

        """;

    [Fact]
    public void A_PlatyPS_block_is_read_and_written_back_unchanged()
    {
        var yaml = ParameterYaml.Parse(PlatyPsBlock);
        Assert.Equal("String[]", yaml[ParameterYaml.Type]);
        Assert.Equal("0", yaml[ParameterYaml.Position]);
        Assert.Equal(PlatyPsBlock, yaml.ToYaml());
    }

    [Fact]
    public void An_empty_value_is_written_as_the_bare_key()
    {
        var yaml = ParameterYaml.Parse("Type: String\nAliases:\n");
        Assert.Null(yaml[ParameterYaml.Aliases]);
        Assert.Equal("Type: String\nAliases:\n", yaml.ToYaml());
    }

    [Fact]
    public void A_value_that_plain_YAML_would_misread_is_quoted()
    {
        var yaml = new ParameterYaml(new Dictionary<string, string?> { [ParameterYaml.DefaultValue] = "a: b" });
        string text = yaml.ToYaml();
        Assert.NotEqual("Default value: a: b\n", text);
        Assert.Equal("a: b", ParameterYaml.Parse(text)[ParameterYaml.DefaultValue]);
    }

    [Theory]
    [InlineData(ParameterYaml.PipelineInput, "True (ByValue, ByPropertyName)", "True (ByPropertyName, ByValue)")]
    [InlineData(ParameterYaml.PipelineInput, "false", "False")]
    [InlineData(ParameterYaml.Aliases, "None", "")]
    [InlineData(ParameterYaml.Aliases, "Domain,Name", "Domain, Name")]
    [InlineData(ParameterYaml.Required, "true", "True")]
    [InlineData(ParameterYaml.Position, "named", "Named")]
    public void Values_that_mean_the_same_compare_equal(string key, string written, string normalized)
    {
        Assert.Equal(ParameterYaml.Normalize(key, normalized), ParameterYaml.Normalize(key, written));
    }
}
